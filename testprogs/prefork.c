/* prefork: a parent and its N worker processes, all started before any
 * tracer comes, as a pre-forking server's are. Each worker reads one byte
 * from the shared stdin, opens /dev/null for it and never closes it, then
 * waits to be killed: N bytes give each worker exactly one leak. Workers
 * die with the parent (PR_SET_PDEATHSIG). The parent only waits for them.
 *
 * usage: prefork [N]                  (default 2 workers)
 *   EXPECT child pid=N                 one per worker, from the parent
 *   EXPECT workers n=N pid=PARENT      all workers started
 *   EXPECT leak fd=N ... pid=WORKER    one per worker, at its byte
 */
#include "expect.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static void worker(pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        die_at("prctl", HERE);
    if (getppid() != parent)
        _exit(0);
    char byte;
    if (read(0, &byte, 1) == 1)
        TRACK("leak", "openat", open("/dev/null", O_RDONLY));
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    int workers = argc > 1 ? atoi(argv[1]) : 2;
    pid_t self = getpid();
    for (int k = 0; k < workers; k++) {
        pid_t pid = fork();
        if (pid < 0)
            die_at("fork", HERE);
        if (pid == 0)
            worker(self);
        expect("child pid=%d", (int)pid);
    }
    expect("workers n=%d pid=%d", workers, (int)self);
    while (wait(NULL) > 0)
        ;
    return 0;
}
