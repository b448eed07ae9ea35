/* leader_exit: the main thread leaves with pthread_exit while a worker runs
 * on, opening and closing /dev/null until it reads a line on its stdin.
 * The process then has a zombie leader: /proc/PID/fd and /proc/PID/maps are
 * empty, the worker's /proc/PID/task/TID/ ones are not, and the leader's
 * exit is reported to a tracer only when the worker is gone too.
 *
 * usage: leader_exit [--linger]
 *   --linger: the leader first waits for a line on stdin (so a tracer can
 *   attach before it leaves), then leaves; the worker ends at the next line.
 *   EXPECT worker pid=P                     (the worker runs)
 *   EXPECT leader_gone pid=P                (the leader is leaving)
 *   EXPECT done opens=N                     (the worker's last line)
 */
#include "expect.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>

static atomic_int leader_gone;

static void *worker(void *arg)
{
    (void)arg;
    int opens = 0;
    expect("worker pid=%d", getpid());
    for (;;) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0)
            die_at("open", HERE);
        opens++;
        close(fd);
        struct pollfd in = { .fd = 0, .events = POLLIN };
        if (atomic_load(&leader_gone) && poll(&in, 1, 10) > 0)
            break;
        if (!atomic_load(&leader_gone))
            usleep(10000);
    }
    wait_for_line();
    expect("done opens=%d", opens);
    return NULL;
}

int main(int argc, char **argv)
{
    int linger = take_flag(&argc, argv, "--linger");
    pthread_t tid;
    if (pthread_create(&tid, NULL, worker, NULL) != 0)
        die_at("pthread_create", HERE);
    if (linger)
        wait_for_line();
    atomic_store(&leader_gone, 1);
    expect("leader_gone pid=%d", getpid());
    pthread_exit(NULL);
}
