/* reexec: reads single bytes on stdin and acts on each:
 *   'o'  opens /dev/null and never closes it (kept across exec)
 *   'e'  execs itself again (same pid; the fds it opened stay open)
 *   'f'  forks a child that says whether SIGTRAP is ignored in it, and
 *        waits for it
 * EOF ends it.
 *
 * usage: reexec [--wait]
 *   EXPECT start pid=N                      at each start (again after exec)
 *   EXPECT leak fd=N syscall=openat ...     per 'o'
 *   EXPECT child pid=N sigtrap_ignored=0|1  per 'f', from the child
 */
#include "expect.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

static int sigtrap_ignored(void)
{
    struct sigaction now;
    if (sigaction(SIGTRAP, NULL, &now) != 0)
        die_at("sigaction", HERE);
    return now.sa_handler == SIG_IGN;
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    char byte;
    while (read(0, &byte, 1) == 1) {
        if (byte == 'o') {
            TRACK("leak", "openat", open("/dev/null", O_RDONLY));
        } else if (byte == 'e') {
            execl("/proc/self/exe", "reexec", (char *)NULL);
            die_at("execl", HERE);
        } else if (byte == 'f') {
            pid_t pid = fork();
            if (pid < 0)
                die_at("fork", HERE);
            if (pid == 0) {
                expect("child pid=%d sigtrap_ignored=%d", (int)getpid(), sigtrap_ignored());
                _exit(0);
            }
            waitpid(pid, NULL, 0);
        }
    }
    return 0;
}
