/* idle_threads: N threads that stay alive, parked, so a test can count them
 * while the program is traced. The threads block reading a pipe nobody
 * writes. Once every thread has started (a barrier), main creates one
 * eventfd (never closed: the event a test can catch once the threads
 * exist), prints its line and "ready", then waits for a line (or EOF) on
 * stdin and exits, which ends the parked threads too.
 *
 * usage: idle_threads [N]      (default 3)
 *   EXPECT leak fd=N syscall=eventfd2 ...
 *   EXPECT ready threads=N+1 pid=P        (N+1: the parked ones and main)
 */
#include "expect.h"

#include <pthread.h>
#include <sys/eventfd.h>

static pthread_barrier_t started;
static int never_written[2];

static void *park(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&started);
    char c;
    while (read(never_written[0], &c, 1) < 0 && errno == EINTR)
        ;
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 3;
    if (pipe(never_written) < 0)
        die_at("pipe", HERE);
    pthread_barrier_init(&started, NULL, (unsigned)n + 1);
    for (int t = 0; t < n; t++) {
        pthread_t tid;
        if (pthread_create(&tid, NULL, park, NULL) != 0)
            die_at("pthread_create", HERE);
    }
    pthread_barrier_wait(&started);
    TRACK("leak", "eventfd2", eventfd(0, 0));
    expect("ready threads=%d pid=%d", n + 1, getpid());
    wait_for_line();
    return 0;
}
