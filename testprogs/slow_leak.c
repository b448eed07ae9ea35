/* slow_leak: one slow leak among fast churn, as a long-running server
 * shows it. The main thread leaks one UDP socket every PERIOD_MS
 * milliseconds, on an absolute schedule (no drift); a second thread opens
 * and closes /dev/null as fast as it is let (about 2,000 a second), so
 * that the leak is a few fds among hundreds of thousands of events.
 *
 *     EXPECT rate per_min=N period_ms=P        the leak's true rate
 *     EXPECT leak fd=N syscall=socket site=... the first leak, then every
 *                                              one is the same site
 *
 * Runs until killed.
 *
 * usage: slow_leak [--wait] [PERIOD_MS]   (default 250)
 */
#include "expect.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

static void *churn(void *arg)
{
    (void)arg;
    const struct timespec pause = { 0, 500 * 1000 };
    for (;;) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd >= 0)
            close(fd);
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static int report_metric(int first)
{
    struct site at;
    int fd = AT(at, socket(AF_INET, SOCK_DGRAM, 0));
    if (fd < 0)
        die_at("socket", at);
    if (first)
        expect_fd_at("leak", fd, "socket", at);
    return fd;
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    long period_ms = argc > 1 ? atol(argv[1]) : 250;
    if (period_ms <= 0)
        period_ms = 250;
    expect("rate per_min=%ld period_ms=%ld", 60000 / period_ms, period_ms);
    pthread_t thread;
    if (pthread_create(&thread, NULL, churn, NULL) != 0)
        exit(2);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (int i = 0;; i++) {
        report_metric(i == 0);
        next.tv_nsec += period_ms * 1000000L;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
}
