/* connector: the socket calls fdbg records as annotations of an fd (bind,
 * connect, listen, accept's peer), on sockets some of which are closed
 * before the end, so only fdbg's history can tell where they went.
 *
 * usage: connector
 *   EXPECT start pid=N
 *   EXPECT connect fd=N addr=127.0.0.1:8125 result=0 site=... fn=...
 *     a UDP socket connected (no listener needed); closed before the end
 *   EXPECT bind fd=N addr=127.0.0.1:P        a TCP socket bound, never listening:
 *                                            a closed port P
 *   EXPECT connect fd=N addr=127.0.0.1:P result=ECONNREFUSED ...
 *     a TCP socket connecting to the closed port, refused; stays open
 *   EXPECT listen fd=N addr=127.0.0.1:Q backlog=16    bound and listening
 *   EXPECT connect fd=N addr=127.0.0.1:Q result=0 ... a client of the listener
 *   EXPECT accept fd=N peer=127.0.0.1:R            the listener accepted it
 *   EXPECT close fd=N ...                          the UDP socket closed
 *   EXPECT done
 * The UDP socket's line is `open` (closed again), the others' `leak`: every
 * socket but the UDP one is open at exit.
 */
#include "expect.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

static int local_port(int fd)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        die_at("getsockname", HERE);
    return ntohs(addr.sin_port);
}

/* connect() to 127.0.0.1:port; prints its line with the result's errno name. */
static int connect_to(int fd, int port)
{
    struct sockaddr_in addr = loopback(port);
    struct site at;
    int r = AT(at, connect(fd, (struct sockaddr *)&addr, sizeof addr));
    expect("connect fd=%d addr=127.0.0.1:%d result=%s site=%s:%d fn=%s", fd, port,
           r == 0 ? "0" : errno_name(errno), at.file, at.line, at.fn);
    return r;
}

static int bound(int type)
{
    int fd = TRACK("leak", "socket", socket(AF_INET, type, 0));
    struct sockaddr_in addr = loopback(0);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die_at("bind", HERE);
    return fd;
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);

    int udp = TRACK("open", "socket", socket(AF_INET, SOCK_DGRAM, 0));
    if (connect_to(udp, 8125) < 0)
        die_at("connect", HERE);

    int closed_port = bound(SOCK_STREAM);
    int port = local_port(closed_port);
    expect("bind fd=%d addr=127.0.0.1:%d", closed_port, port);
    int refused = TRACK("leak", "socket", socket(AF_INET, SOCK_STREAM, 0));
    if (connect_to(refused, port) == 0 || errno != ECONNREFUSED)
        die_at("connect (should be refused)", HERE);

    int listener = bound(SOCK_STREAM);
    if (listen(listener, 16) < 0)
        die_at("listen", HERE);
    int listen_port = local_port(listener);
    expect("listen fd=%d addr=127.0.0.1:%d backlog=16", listener, listen_port);

    int client = TRACK("leak", "socket", socket(AF_INET, SOCK_STREAM, 0));
    if (connect_to(client, listen_port) < 0)
        die_at("connect", HERE);
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    int accepted = TRACK("leak", "accept4", accept4(listener, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC));
    expect("accept fd=%d peer=127.0.0.1:%d", accepted, local_port(client));

    CLOSE(udp);
    expect("done");
    return 0;
}
