/* leader_exit: the main thread leaves with pthread_exit while a worker runs
 * on, opening and closing /dev/null until it reads a line on its stdin.
 * The process then has a zombie leader: /proc/PID/fd and /proc/PID/maps are
 * empty, the worker's /proc/PID/task/TID/ ones are not, and the leader's
 * exit is reported to a tracer only when the worker is gone too.
 *
 * usage: leader_exit
 *   EXPECT leader_gone pid=P                (the leader is leaving)
 *   EXPECT done opens=N                     (the worker's last line)
 */
#include "expect.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>

static void *worker(void *arg)
{
    (void)arg;
    int opens = 0;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0)
            die_at("open", HERE);
        opens++;
        close(fd);
        struct pollfd in = { .fd = 0, .events = POLLIN };
        if (poll(&in, 1, 10) > 0)
            break;
    }
    expect("done opens=%d", opens);
    return NULL;
}

int main(void)
{
    pthread_t tid;
    if (pthread_create(&tid, NULL, worker, NULL) != 0)
        die_at("pthread_create", HERE);
    expect("leader_gone pid=%d", getpid());
    pthread_exit(NULL);
}
