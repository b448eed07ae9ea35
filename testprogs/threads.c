/* threads: T threads start together (a barrier) and each does K iterations
 * of open+close of /dev/null and socket+close, so creations and closes of
 * different threads interleave and fd numbers are reused across threads.
 * Halfway through, each thread leaks exactly L fds (alternately a file and a
 * socket). Iterations print nothing; leaks print their lines.
 *
 * usage: threads [--wait] [T K L]      (defaults: 4 200 2)
 *   EXPECT leak fd=N syscall=openat|socket ... tid=N    T*L times
 *   EXPECT done threads=T iterations=K leaks=T*L
 */
#include "expect.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>

static int iterations = 200, leaks_per_thread = 2;
static pthread_barrier_t start_together;

static void leak_one(int k)
{
    if (k % 2 == 0)
        TRACK("leak", "openat", open("/dev/null", O_RDONLY));
    else
        TRACK("leak", "socket", socket(AF_UNIX, SOCK_DGRAM, 0));
}

static void *worker(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&start_together);
    for (int i = 0; i < iterations; i++) {
        if (i == iterations / 2)
            for (int k = 0; k < leaks_per_thread; k++)
                leak_one(k);
        int file = open("/dev/null", O_RDONLY);
        int sock = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (file < 0 || sock < 0)
            die_at("open/socket", HERE);
        close(file);
        close(sock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    if (argc > 3) {
        iterations = atoi(argv[2]);
        leaks_per_thread = atoi(argv[3]);
    }
    pthread_t tids[threads];
    pthread_barrier_init(&start_together, NULL, (unsigned)threads);
    for (int t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, worker, NULL) != 0)
            die_at("pthread_create", HERE);
    for (int t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    pthread_barrier_destroy(&start_together);
    expect("done threads=%d iterations=%d leaks=%d", threads, iterations,
           threads * leaks_per_thread);
    return 0;
}
