/* nonfd_loop: many syscalls that touch no fd (raw getppid, which libc cannot
 * cache), then exactly one open and one close. A tracer must not slow this
 * down much, nor report anything but the one file.
 *
 * usage: nonfd_loop [--wait] [N]        (default N = 100000)
 *   EXPECT done syscalls=N fd_events=2
 */
#include "expect.h"

#include <fcntl.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    long n = argc > 1 ? atol(argv[1]) : 100000;
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    int fd = TRACK("open", "openat", open("/dev/null", O_RDONLY));
    CLOSE(fd);
    expect("done syscalls=%ld fd_events=2", n);
    return 0;
}
