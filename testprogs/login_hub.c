/* login_hub: the leaky login server of login_server.c, serving many
 * connections at once from one poll() loop, so that clients can stay
 * connected while others log in. A line "LOGIN <name>" runs on_login()
 * (which leaks one UDP socket in statsd_init) and answers "OK"; "PING"
 * answers "PONG"; "QUIT" stops the server (exit 0). The server closes a
 * connection at EOF. It prints nothing per login: the leaks are in the
 * statsd_init EXPECT lines.
 *
 * usage: login_hub [PORT]   (PORT 0 or absent: ephemeral)
 */
#include "expect.h"
#include "listen.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

void on_login(const char *name);

#define MAX_CONNS 4096

struct conn {
    int fd;
    size_t len;
    char line[256];
};

static struct pollfd polled[MAX_CONNS + 1];
static struct conn conns[MAX_CONNS];
static int nconns;

/* Handles a complete line; returns 0 when asked to quit. */
static int handle(struct conn *c)
{
    if (strncmp(c->line, "LOGIN ", 6) == 0) {
        on_login(c->line + 6);
        (void)write(c->fd, "OK\n", 3);
    } else if (strcmp(c->line, "PING") == 0) {
        (void)write(c->fd, "PONG\n", 5);
    } else if (strcmp(c->line, "QUIT") == 0) {
        return 0;
    }
    return 1;
}

/* Reads what connection i sent; returns 0 when asked to quit. */
static int serve(int i)
{
    struct conn *c = &conns[i];
    char buf[256];
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n <= 0) {
        CLOSE(c->fd);
        conns[i] = conns[--nconns];
        return 1;
    }
    for (ssize_t k = 0; k < n; k++) {
        if (buf[k] == '\n') {
            c->line[c->len] = '\0';
            c->len = 0;
            if (!handle(c))
                return 0;
        } else if (c->len + 1 < sizeof c->line) {
            c->line[c->len++] = buf[k];
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) { /* room for thousands of leaks */
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
    int listener = listen_on(argc > 1 ? atoi(argv[1]) : 0, 512);
    for (;;) {
        polled[0] = (struct pollfd){ .fd = listener, .events = POLLIN };
        for (int i = 0; i < nconns; i++)
            polled[i + 1] = (struct pollfd){ .fd = conns[i].fd, .events = POLLIN };
        int count = nconns;
        if (poll(polled, (nfds_t)count + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            die_at("poll", HERE);
        }
        /* Connections first (by fd: serve() may move the last into i). */
        for (int i = count - 1; i >= 0; i--) {
            if (polled[i + 1].revents && !serve(i)) {
                expect("done");
                return 0;
            }
        }
        if ((polled[0].revents & POLLIN) && nconns < MAX_CONNS) {
            int fd = TRACK("open", "accept", accept(listener, NULL, NULL));
            conns[nconns++] = (struct conn){ .fd = fd };
        }
    }
}
