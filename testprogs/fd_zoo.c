/* fd_zoo: every syscall that creates or destroys an fd in fdbg's model, each
 * followed by its EXPECT line. Optional syscalls that are unavailable here
 * (no privilege, no kernel support) print "skip" instead. Finally it marks
 * some fds close-on-exec and re-executes itself, so a test can check that
 * execve closed exactly the close-on-exec fds:
 *
 *     EXPECT inherited open=0,1,2            fds open when main() started
 *     EXPECT before_exec open=0,1,2,4,...
 *     EXPECT cloexec fds=5,...
 *     EXPECT after_exec open=0,1,2,4,...     == before_exec minus cloexec
 *
 * Every fd created or closed after "inherited" has its line, including the
 * /proc/self/fd directory fd used to list them, so replaying open/leak and
 * close/implicit_close lines over "inherited" gives "before_exec".
 *
 * usage: fd_zoo [--wait]     (fd_zoo --after-exec is the re-executed half)
 */
#include "expect.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/io_uring.h>
#include <linux/openat2.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

/* Writes the sorted open fds (only close-on-exec ones if `cloexec_only`) as "a,b,c". */
static void list_fds(char *out, size_t size, int cloexec_only)
{
    int dir_fd = TRACK("open", "openat", open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    DIR *dir = fdopendir(dir_fd);
    char seen[1024] = { 0 };
    struct dirent *entry;
    while (dir && (entry = readdir(dir)) != NULL) {
        int fd = atoi(entry->d_name);
        if (entry->d_name[0] != '.' && fd != dir_fd && fd < (int)sizeof seen)
            seen[fd] = !cloexec_only || (fcntl(fd, F_GETFD) & FD_CLOEXEC);
    }
    struct site at;
    AT(at, closedir(dir));
    expect_fd_at("close", dir_fd, "close", at);
    size_t len = 0;
    out[0] = '\0';
    for (int fd = 0; fd < (int)sizeof seen && len + 8 < size; fd++)
        if (seen[fd])
            len += (size_t)snprintf(out + len, size - len, len ? ",%d" : "%d", fd);
}

static int tcp_listener(struct sockaddr_in *addr)
{
    int fd = TRACK("open", "socket", socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    socklen_t len = sizeof *addr;
    *addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(fd, (struct sockaddr *)addr, len) < 0 || listen(fd, 8) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0)
        die_at("listen", HERE);
    return fd;
}

static int tcp_connect(const struct sockaddr_in *addr)
{
    int fd = TRACK("open", "socket", socket(AF_INET, SOCK_STREAM, 0));
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0)
        die_at("connect", HERE);
    return fd;
}

static void sockets(void)
{
    int sv[2];
    TRACK_PAIR("open", "socketpair", sv, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    CLOSE(sv[1]);

    struct sockaddr_in addr;
    int listener = tcp_listener(&addr);
    tcp_connect(&addr); /* loopback connects complete before accept */
    tcp_connect(&addr);
    TRACK("open", "accept", syscall(SYS_accept, listener, NULL, NULL));
    TRACK("open", "accept4", accept4(listener, NULL, NULL, SOCK_CLOEXEC));
}

static void files(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/fdbg-zoo-%d", getpid());

    TRACK("open", "open", syscall(SYS_open, "/dev/null", O_RDONLY));
    int tmp_dir = TRACK("open", "openat", openat(AT_FDCWD, "/tmp", O_RDONLY | O_DIRECTORY));
    struct open_how how = { .flags = O_RDONLY | O_CLOEXEC };
    TRACK_OPT("open", "openat2", syscall(SYS_openat2, AT_FDCWD, "/dev/null", &how, sizeof how));
    int created = TRACK("open", "creat", syscall(SYS_creat, path, 0600));
    CLOSE(created);

    union { struct file_handle handle; char bytes[sizeof(struct file_handle) + MAX_HANDLE_SZ]; } h;
    h.handle.handle_bytes = MAX_HANDLE_SZ;
    int mount_id;
    if (name_to_handle_at(AT_FDCWD, path, &h.handle, &mount_id, 0) < 0)
        expect("skip syscall=open_by_handle_at errno=%s", errno_name(errno));
    else
        TRACK_OPT("open", "open_by_handle_at", open_by_handle_at(tmp_dir, &h.handle, O_RDONLY));
    unlink(path);
}

static void pipes_and_dups(void)
{
    int p[2], q[2];
    TRACK_PAIR("open", "pipe", p, syscall(SYS_pipe, p));
    TRACK_PAIR("open", "pipe2", q, pipe2(q, O_CLOEXEC));

    int copy = TRACK("open", "dup", dup(p[0]));
    struct site at;
    int onto = AT(at, syscall(SYS_dup2, q[0], copy)); /* copy is open: closed first */
    if (onto != copy)
        die_at("dup2", at);
    expect_fd_at("implicit_close", copy, "dup2", at);
    expect_fd_at("open", onto, "dup2", at);
    TRACK("open", "dup3", dup3(p[1], 500, O_CLOEXEC)); /* 500 is not open */

    TRACK("open", "fcntl", fcntl(p[0], F_DUPFD, 50));
    int cloexec_copy = TRACK("open", "fcntl", fcntl(p[0], F_DUPFD_CLOEXEC, 60));

    /* close-on-exec changed after creation, both ways */
    fcntl(p[1], F_SETFD, FD_CLOEXEC);
    expect("setfd fd=%d cloexec=1 syscall=fcntl", p[1]);
    fcntl(cloexec_copy, F_SETFD, 0);
    expect("setfd fd=%d cloexec=0 syscall=fcntl", cloexec_copy);
}

static void anon_inodes(void)
{
    TRACK("open", "eventfd", syscall(SYS_eventfd, 0));
    TRACK("open", "eventfd2", syscall(SYS_eventfd2, 0, O_CLOEXEC));
    TRACK("open", "epoll_create", syscall(SYS_epoll_create, 1));
    TRACK("open", "epoll_create1", epoll_create1(EPOLL_CLOEXEC));
    TRACK("open", "timerfd_create", timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR2);
    int sfd = TRACK("open", "signalfd", syscall(SYS_signalfd, -1, &mask, sizeof(long)));
    TRACK("open", "signalfd4", syscall(SYS_signalfd4, -1, &mask, sizeof(long), O_CLOEXEC));
    /* On an existing signalfd, signalfd4 only updates its mask: no new fd. */
    struct site at;
    long same = AT(at, syscall(SYS_signalfd4, sfd, &mask, sizeof(long), 0));
    if (same != sfd)
        die_at("signalfd4 on an existing fd", at);
    expect("nocreate fd=%d syscall=signalfd4", sfd);

    TRACK("open", "inotify_init", syscall(SYS_inotify_init));
    TRACK("open", "inotify_init1", inotify_init1(IN_CLOEXEC));
    TRACK_OPT("open", "fanotify_init", fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC, O_RDONLY));
    TRACK("open", "memfd_create", memfd_create("fd_zoo", 0));

    /* pidfd_open, pidfd_getfd and io_uring_setup always set close-on-exec. */
    int pidfd = TRACK("open", "pidfd_open", syscall(SYS_pidfd_open, getpid(), 0));
    TRACK_OPT("open", "pidfd_getfd", syscall(SYS_pidfd_getfd, pidfd, STDIN_FILENO, 0));
    TRACK_OPT("open", "userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    struct perf_event_attr attr = { .type = PERF_TYPE_SOFTWARE, .size = sizeof attr,
                                    .config = PERF_COUNT_SW_DUMMY, .disabled = 1,
                                    .exclude_kernel = 1, .exclude_hv = 1 };
    TRACK_OPT("open", "perf_event_open", syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
    struct io_uring_params params = { 0 };
    TRACK_OPT("open", "io_uring_setup", syscall(SYS_io_uring_setup, 4, &params));
}

/* Sends two fds in one SCM_RIGHTS message. */
static void send_fds(int sock, int a, int b)
{
    union { struct cmsghdr align; char buf[CMSG_SPACE(2 * sizeof(int))]; } control;
    char byte = 'x';
    struct iovec iov = { &byte, 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = control.buf, .msg_controllen = sizeof control.buf };
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(2 * sizeof(int));
    memcpy(CMSG_DATA(cmsg), (int[]){ a, b }, 2 * sizeof(int));
    if (sendmsg(sock, &msg, 0) != 1)
        die_at("sendmsg", HERE);
}

/* Prints one line per fd received in `msg`, made by `syscall` at `at`. */
static void expect_received(struct msghdr *msg, const char *syscall, struct site at)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            expect_fd_at("open", fd, syscall, at);
        }
    }
}

static void passing_fds(void)
{
    int sv[2];
    TRACK_PAIR("open", "socketpair", sv, socketpair(AF_UNIX, SOCK_DGRAM, 0, sv));
    union { struct cmsghdr align; char buf[CMSG_SPACE(2 * sizeof(int))]; } control;
    char byte;
    struct iovec iov = { &byte, 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = control.buf, .msg_controllen = sizeof control.buf };
    struct site at;

    send_fds(sv[0], STDIN_FILENO, STDERR_FILENO);
    if (AT(at, recvmsg(sv[1], &msg, 0)) != 1)
        die_at("recvmsg", at);
    expect_received(&msg, "recvmsg", at);

    send_fds(sv[0], STDIN_FILENO, STDERR_FILENO);
    struct mmsghdr mmsg = { .msg_hdr = msg };
    mmsg.msg_hdr.msg_controllen = sizeof control.buf;
    if (AT(at, recvmmsg(sv[1], &mmsg, 1, MSG_CMSG_CLOEXEC, NULL)) != 1)
        die_at("recvmmsg", at);
    expect_received(&mmsg.msg_hdr, "recvmmsg", at);
    CLOSE(sv[0]);
    CLOSE(sv[1]);
}

/* Three consecutive copies of fd at `base`, base+1, base+2. */
static int three_copies(int fd, int base)
{
    for (int i = 0; i < 3; i++)
        if (TRACK("open", "fcntl", fcntl(fd, F_DUPFD, base)) != base + i)
            die_at("consecutive fds", HERE);
    return base;
}

static void closing(void)
{
    int fd = TRACK("open", "openat", open("/dev/null", O_RDONLY));
    CLOSE(fd);
    BADCLOSE(fd);

    int first = three_copies(STDIN_FILENO, 600);
    struct site at;
    if (AT(at, syscall(SYS_close_range, first, first + 2, 0)) < 0)
        die_at("close_range", at);
    for (int i = 0; i < 3; i++)
        expect_fd_at("close", first + i, "close_range", at);

    first = three_copies(STDIN_FILENO, 610);
    if (AT(at, syscall(SYS_close_range, first, first + 2, CLOSE_RANGE_CLOEXEC)) < 0)
        die_at("close_range", at);
    for (int i = 0; i < 3; i++)
        expect("setfd fd=%d cloexec=1 syscall=close_range", first + i);
}

int main(int argc, char **argv)
{
    char open_fds[4096], cloexec_fds[4096];
    if (take_flag(&argc, argv, "--after-exec")) {
        list_fds(open_fds, sizeof open_fds, 0);
        expect("after_exec open=%s", open_fds);
        return 0;
    }
    expect_start(&argc, argv);
    list_fds(open_fds, sizeof open_fds, 0);
    expect("inherited open=%s", open_fds);

    sockets();
    files();
    pipes_and_dups();
    anon_inodes();
    passing_fds();
    closing();

    list_fds(open_fds, sizeof open_fds, 0);
    list_fds(cloexec_fds, sizeof cloexec_fds, 1);
    expect("before_exec open=%s", open_fds);
    expect("cloexec fds=%s", cloexec_fds);
    execv("/proc/self/exe", (char *[]){ argv[0], "--after-exec", NULL });
    die_at("execv", HERE);
}
