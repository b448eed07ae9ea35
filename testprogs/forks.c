/* forks: fd tables that split. The parent opens fds, then fork()s a child
 * that closes its inherited copies, opens and closes a file of its own and
 * execs /bin/echo child-echo; then vfork()s a child that execs /bin/echo
 * vfork-echo. The parent waits for both and leaks one fd of its own.
 * Traced or not, it must behave the same.
 *
 * usage: forks [--wait]
 *   EXPECT leak fd=N ... pid=PARENT        the parent's one leak
 *   EXPECT close fd=N ... pid=CHILD        the child closing inherited copies
 *   EXPECT child kind=fork|vfork pid=N status=0
 */
#include "expect.h"

#include <fcntl.h>
#include <sys/wait.h>

static void forked_child(int inherited_a, int inherited_b)
{
    CLOSE(inherited_a);
    CLOSE(inherited_b);
    int own = TRACK("open", "openat", open("/dev/null", O_WRONLY));
    CLOSE(own);
    execl("/bin/echo", "echo", "child-echo", (char *)NULL);
    _exit(127);
}

static void wait_child(const char *kind, pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) != pid)
        die_at("waitpid", HERE);
    expect("child kind=%s pid=%d status=%d", kind, pid,
           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    int config = TRACK("leak", "openat", open("/dev/null", O_RDONLY));
    int log = TRACK("open", "openat", open("/dev/null", O_WRONLY));

    pid_t child = fork();
    if (child < 0)
        die_at("fork", HERE);
    if (child == 0)
        forked_child(config, log);
    wait_child("fork", child);

    pid_t vchild = vfork();
    if (vchild < 0)
        die_at("vfork", HERE);
    if (vchild == 0) {
        execl("/bin/echo", "echo", "vfork-echo", (char *)NULL);
        _exit(127);
    }
    wait_child("vfork", vchild);

    CLOSE(log);
    expect("done leaks=1");
    return 0;
}
