/* thread_exec: a thread other than the main one calls execve. The kernel
 * then ends every other thread and the exec'ing thread takes over the
 * process id: a tracer sees PTRACE_EVENT_EXEC on the leader's tid with the
 * former tid in its message. Before the exec, main leaks one fd that is
 * not close-on-exec and one that is.
 *
 * usage: thread_exec [--wait]
 *   EXPECT leak fd=N ... (survives the exec)
 *   EXPECT open fd=N ... (O_CLOEXEC: closed by the exec)
 *   then the program execs /bin/true (exit 0)
 */
#include "expect.h"

#include <fcntl.h>
#include <pthread.h>

static void *exec_true(void *arg)
{
    (void)arg;
    char *argv[] = { "true", NULL };
    execv("/bin/true", argv);
    die_at("execv", HERE);
    return NULL;
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    TRACK("leak", "openat", open("/dev/null", O_RDONLY));
    TRACK("open", "openat", open("/dev/null", O_RDONLY | O_CLOEXEC));
    pthread_t tid;
    if (pthread_create(&tid, NULL, exec_true, NULL) != 0)
        die_at("pthread_create", HERE);
    for (;;)
        pause();
}
