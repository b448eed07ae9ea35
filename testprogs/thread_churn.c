/* thread_churn: rounds of T threads created at once; each opens and closes a
 * socket and a pipe, then the main thread joins them all. Threads appear and
 * vanish all the time, so a tracer sees clone events, thread exits and fd
 * events interleaved in every order. Nothing leaks.
 *
 * usage: thread_churn [T [ROUNDS]]     (defaults: 8 threads, rounds forever)
 *   EXPECT start pid=N
 *   EXPECT round n=N              every 100 rounds
 *   EXPECT done rounds=N          when ROUNDS is given and they are done
 */
#include "expect.h"

#include <pthread.h>
#include <sys/socket.h>

static void *worker(void *arg)
{
    (void)arg;
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    int pipefd[2];
    if (sock < 0 || pipe2(pipefd, 0) != 0)
        die_at("socket/pipe2", HERE);
    close(sock);
    close(pipefd[0]);
    close(pipefd[1]);
    return NULL;
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    int threads = argc > 1 ? atoi(argv[1]) : 8;
    long rounds = argc > 2 ? atol(argv[2]) : -1;
    pthread_t tids[threads];
    for (long n = 1; rounds < 0 || n <= rounds; n++) {
        for (int t = 0; t < threads; t++)
            if (pthread_create(&tids[t], NULL, worker, NULL) != 0)
                die_at("pthread_create", HERE);
        for (int t = 0; t < threads; t++)
            pthread_join(tids[t], NULL);
        if (n % 100 == 0)
            expect("round n=%ld", n);
    }
    expect("done rounds=%ld", rounds);
    return 0;
}
