/* bench: a syscall-heavy loop for measuring tracer overhead. Each iteration
 * makes exactly 8 syscalls that create or close no fd (4 raw getppid, 2 reads
 * of one byte from /dev/zero, 2 writes of one byte to /dev/null, on fds
 * opened once) and 1 open+close of /dev/null (2 fd events). The counts are
 * the loop's; opening and closing the two fds around it has its own lines.
 *
 * With --socket (the "fdchurn" loop), each iteration makes a UDP socket and
 * closes it instead, and 10 other syscalls (4 getppid, 3 reads, 3 writes).
 *
 * usage: bench [--wait] [--socket] ITER
 *   EXPECT done iter=N fd_events=2N other_syscalls=8N (10N with --socket)
 */
#include "expect.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    int sockets = take_flag(&argc, argv, "--socket");
    int rw = sockets ? 3 : 2;
    long iter = argc > 1 ? atol(argv[1]) : 10000;
    int zero = TRACK("open", "openat", open("/dev/zero", O_RDONLY));
    int null = TRACK("open", "openat", open("/dev/null", O_WRONLY));
    char byte;
    for (long i = 0; i < iter; i++) {
        for (int k = 0; k < 4; k++)
            syscall(SYS_getppid);
        for (int k = 0; k < rw; k++)
            if (read(zero, &byte, 1) != 1 || write(null, &byte, 1) != 1)
                die_at("read/write", HERE);
        int fd = sockets ? socket(AF_INET, SOCK_DGRAM, 0) : open("/dev/null", O_RDONLY);
        if (fd < 0)
            die_at("open/socket", HERE);
        close(fd);
    }
    CLOSE(zero);
    CLOSE(null);
    expect("done iter=%ld fd_events=%ld other_syscalls=%ld", iter, 2 * iter,
           (4 + 2 * rw) * iter);
    return 0;
}
