/* prefork: a parent and its N worker processes, all started before any
 * tracer comes, as a pre-forking server's are. Each worker reads single
 * bytes from the shared stdin; for each byte it opens /dev/null and never
 * closes it. The parent only waits for its workers.
 *
 * usage: prefork [N]                  (default 2 workers)
 *   EXPECT child pid=N                 one per worker, from the parent
 *   EXPECT workers n=N pid=PARENT       all workers started
 *   EXPECT leak fd=N ... pid=WORKER    one per byte read
 */
#include "expect.h"

#include <fcntl.h>
#include <sys/wait.h>

static void worker(void)
{
    char byte;
    while (read(0, &byte, 1) == 1)
        TRACK("leak", "openat", open("/dev/null", O_RDONLY));
    _exit(0);
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    int workers = argc > 1 ? atoi(argv[1]) : 2;
    for (int k = 0; k < workers; k++) {
        pid_t pid = fork();
        if (pid < 0)
            die_at("fork", HERE);
        if (pid == 0)
            worker();
        expect("child pid=%d", (int)pid);
    }
    expect("workers n=%d pid=%d", workers, (int)getpid());
    while (wait(NULL) > 0)
        ;
    return 0;
}
