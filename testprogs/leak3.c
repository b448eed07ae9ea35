/* leak3: leaks exactly three fds, each from its own function and syscall
 * (openat, socket, eventfd2), next to fds that are opened and closed properly
 * and one double close (a bad close). Exits with the three fds still open.
 *
 * usage: leak3 [--wait] [--hold]
 */
#include "expect.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

static char config_path[64];

static int open_config(void)
{
    return TRACK("leak", "openat", openat(AT_FDCWD, config_path, O_RDONLY));
}

static int connect_metrics(void)
{
    return TRACK("leak", "socket", socket(AF_INET, SOCK_DGRAM, 0));
}

static int make_notifier(void)
{
    return TRACK("leak", "eventfd2", eventfd(0, 0));
}

/* Opens and closes, as it should. */
static void write_config(void)
{
    int fd = TRACK("open", "openat", open(config_path, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    if (write(fd, "verbose=1\n", 10) != 10)
        exit(2);
    CLOSE(fd);
    int sock = TRACK("open", "socket", socket(AF_UNIX, SOCK_STREAM, 0));
    CLOSE(sock);
}

/* Closes the same fd twice: the second close fails with EBADF. */
static void close_twice(void)
{
    int fd = TRACK("open", "openat", open("/dev/null", O_RDONLY));
    CLOSE(fd);
    BADCLOSE(fd);
}

int main(int argc, char **argv)
{
    int hold = take_flag(&argc, argv, "--hold");
    expect_start(&argc, argv);
    snprintf(config_path, sizeof config_path, "/tmp/fdbg-leak3-%d.conf", getpid());

    write_config();
    close_twice();
    open_config();
    connect_metrics();
    make_notifier();

    unlink(config_path);
    expect("done leaks=3");
    expect_hold(hold);
    return 0;
}
