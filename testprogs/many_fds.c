/* many_fds: leaks TOTAL fds (default 50000), every one from the same call
 * site (open_one's openat of /dev/null), for the memory cost of reports that
 * list tens of thousands of fds.
 *
 * One process can hold at most its RLIMIT_NOFILE hard limit (raised to it
 * here); what does not fit is opened by forked children, one after another,
 * each holding its share until it exits (trace them with --follow-forks).
 * Every process prints, after opening its share:
 *
 *     EXPECT leaked pid=P fds=N
 *
 * and the parent, at the end: EXPECT done total=TOTAL processes=K.
 *
 * usage: many_fds [TOTAL]
 */
#include "expect.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>

/* Fds a process keeps free of its limit (stdio, what the loader opened). */
#define SLACK 16

static void open_one(void)
{
    if (openat(AT_FDCWD, "/dev/null", O_RDONLY) < 0)
        die_at("openat /dev/null", HERE);
}

static void leak(long n)
{
    for (long i = 0; i < n; i++)
        open_one();
    expect("leaked pid=%d fds=%ld", getpid(), n);
}

int main(int argc, char **argv)
{
    long total = argc > 1 ? atol(argv[1]) : 50000;
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) < 0)
        die_at("getrlimit", HERE);
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) < 0)
        die_at("setrlimit", HERE);
    long share = (long)limit.rlim_cur - SLACK;
    if (limit.rlim_cur == RLIM_INFINITY || share > 1000000)
        share = 1000000;

    long rest = total;
    int processes = 1;
    while (rest > share) {
        pid_t child = fork();
        if (child < 0)
            die_at("fork", HERE);
        if (child == 0) {
            leak(share);
            return 0;
        }
        int status;
        if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            die_at("child", HERE);
        rest -= share;
        processes++;
    }
    leak(rest);
    expect("done total=%ld processes=%d", total, processes);
    return 0;
}
