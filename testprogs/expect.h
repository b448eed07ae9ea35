/* expect.h — how a test program tells its test what it just did.
 *
 * At the moment a program does something worth checking, it prints one line
 * on stdout, written with a single write(2) so lines from threads and forked
 * children never interleave:
 *
 *     EXPECT <what> key=value key=value ...
 *
 * Keys and values never contain spaces; lists are comma-separated, sorted.
 * Lines about one fd carry where it happened, taken from the call itself:
 *
 *     EXPECT leak fd=5 syscall=socket site=leak3.c:23 fn=open_config pid=7 tid=7
 *
 * `site` is the basename of the source file and the line of the syscall call,
 * `fn` the enclosing function, so a test never hard-codes a C line number.
 * Whats used by the programs:
 *
 *     start pid=N              the program runs (no --wait)
 *     ready pid=N              --wait: blocked until a line (or EOF) on stdin
 *     open fd=N ...            an fd was created and will be closed again (fd_zoo,
 *                              about coverage, calls every fd open: see its header)
 *     leak fd=N ...            an fd was created and is never closed
 *     close fd=N ...           the fd was closed (close, close_range)
 *     implicit_close fd=N ...  dup2/dup3 closed the fd it duplicated onto
 *     badclose fd=N ...        close failed with EBADF (double close)
 *     setfd fd=N cloexec=0|1   close-on-exec changed (fcntl, close_range)
 *     nocreate fd=N ...        a creating syscall reused an fd (signalfd4 on a signalfd)
 *     skip syscall=S errno=E   an optional syscall is unavailable here
 *     hold pid=N               --hold: done, blocked on stdin before exiting
 *     done ...                 the work is finished; counts to check
 *
 * Programs add their own whats (listen, login, child, ...): see each file's header.
 *
 * A syscall that must succeed and fails ends the program with exit status 2
 * and a message on stderr.
 */
#ifndef EXPECT_H
#define EXPECT_H

#ifndef _GNU_SOURCE /* g++ defines it */
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct site {
    const char *file;
    int line;
    const char *fn;
};

static inline const char *expect_basename(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The call site of the expression on this line. */
#define HERE ((struct site){ expect_basename(__FILE__), __LINE__, __func__ })

/* Evaluates expr and records its site in `var`: `int fd = AT(s, socket(...));` */
#define AT(var, expr) ({ (var) = HERE; (expr); })

/* Prints "EXPECT <fmt...>\n" with one write. */
__attribute__((format(printf, 1, 2)))
static inline void expect(const char *fmt, ...)
{
    char line[4096] = "EXPECT ";
    size_t len = strlen(line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + len, sizeof line - len - 1, fmt, ap);
    va_end(ap);
    len = strlen(line);
    line[len++] = '\n';
    for (size_t off = 0; off < len;) {
        ssize_t n = write(STDOUT_FILENO, line + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(3);
        off += (size_t)n;
    }
}

static inline const char *errno_name(int err)
{
    const char *name = strerrorname_np(err);
    return name ? name : "unknown";
}

static inline void die_at(const char *what, struct site at)
{
    fprintf(stderr, "%s:%d (%s): %s failed: %s\n", at.file, at.line, at.fn, what,
            strerror(errno));
    exit(2);
}

/* One line about `fd`, made by `syscall` at `at`. */
static inline void expect_fd_at(const char *what, long fd, const char *syscall, struct site at)
{
    expect("%s fd=%ld syscall=%s site=%s:%d fn=%s pid=%d tid=%d", what, fd, syscall, at.file,
           at.line, at.fn, getpid(), gettid());
}

/* Checks that a creating syscall succeeded (dies otherwise) and prints its line. */
static inline int track_at(const char *what, const char *syscall, long fd, struct site at)
{
    if (fd < 0)
        die_at(syscall, at);
    expect_fd_at(what, fd, syscall, at);
    return (int)fd;
}

/* Like track_at, for a syscall that may be missing or forbidden: prints a skip line. */
static inline int track_opt_at(const char *what, const char *syscall, long fd, struct site at)
{
    if (fd < 0) {
        expect("skip syscall=%s errno=%s", syscall, errno_name(errno));
        return -1;
    }
    expect_fd_at(what, fd, syscall, at);
    return (int)fd;
}

/* `int fd = TRACK("leak", "socket", socket(AF_INET, SOCK_DGRAM, 0));` — keep it on one line. */
#define TRACK(what, syscall, expr) ({ struct site at_ = HERE; track_at(what, syscall, (long)(expr), at_); })
#define TRACK_OPT(what, syscall, expr) ({ struct site at_ = HERE; track_opt_at(what, syscall, (long)(expr), at_); })

/* For syscalls that fill an int[2] (pipe, socketpair): one line per fd. */
#define TRACK_PAIR(what, syscall, fds, expr)                                   \
    do {                                                                       \
        struct site at_ = HERE;                                                \
        if ((expr) < 0)                                                        \
            die_at(syscall, at_);                                              \
        expect_fd_at(what, (fds)[0], syscall, at_);                            \
        expect_fd_at(what, (fds)[1], syscall, at_);                            \
    } while (0)

/* close() that must succeed, and close() that must fail with EBADF. */
#define CLOSE(fd)                                                              \
    do {                                                                       \
        struct site at_ = HERE;                                                \
        int fd_ = (fd);                                                        \
        if (close(fd_) < 0)                                                    \
            die_at("close", at_);                                              \
        expect_fd_at("close", fd_, "close", at_);                              \
    } while (0)
#define BADCLOSE(fd)                                                           \
    do {                                                                       \
        struct site at_ = HERE;                                                \
        int fd_ = (fd);                                                        \
        if (close(fd_) == 0 || errno != EBADF) {                               \
            fprintf(stderr, "close(%d) should have failed with EBADF\n", fd_); \
            exit(2);                                                           \
        }                                                                      \
        expect_fd_at("badclose", fd_, "close", at_);                           \
    } while (0)

/* Blocks until a line or EOF on stdin; read byte by byte so no input is swallowed. */
static inline void wait_for_line(void)
{
    char c;
    for (;;) {
        ssize_t n = read(STDIN_FILENO, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || c == '\n')
            return;
    }
}

/* Removes `flag` from argv if present; returns whether it was. */
static inline int take_flag(int *argc, char **argv, const char *flag)
{
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], flag) == 0) {
            memmove(&argv[i], &argv[i + 1], (size_t)(*argc - i) * sizeof *argv);
            (*argc)--;
            return 1;
        }
    }
    return 0;
}

/* Common start: `--wait` prints "ready" and blocks on stdin, else prints "start". */
static inline void expect_start(int *argc, char **argv)
{
    if (take_flag(argc, argv, "--wait")) {
        expect("ready pid=%d", getpid());
        wait_for_line();
    } else {
        expect("start pid=%d", getpid());
    }
}

/* Common end: with `--hold`, prints "hold" and blocks on stdin so a test can look at /proc/PID/fd. */
static inline void expect_hold(int hold)
{
    if (hold) {
        expect("hold pid=%d", getpid());
        wait_for_line();
    }
}

#endif
