/* socket_zoo: one socket of every family the kernel lists in /proc/net, in
 * the states a classifier must tell apart, then holds them all open.
 *
 * usage: socket_zoo [--wait]     (always holds: a line on stdin ends it)
 *   EXPECT sock fd=N proto=P type=T state=S visible=0|1 local=ADDR remote=ADDR
 *     one line per socket, printed once it is in that state. proto, state
 *     and visible are what fdbg's net module must report; local is the
 *     address it must show ("-" for none: unnamed unix), remote "-" when not
 *     connected. An optional family (tcp6/udp6 without IPv6, raw/packet
 *     without CAP_NET_RAW) prints `EXPECT skip syscall=socket errno=E what=P`.
 *   EXPECT hold pid=N
 */
#include "expect.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stddef.h>
#include <sys/un.h>

static char unix_path[108];

static void print_sock(int fd, const char *proto, const char *type, const char *state, int visible,
                       const char *local, const char *remote)
{
    expect("sock fd=%d proto=%s type=%s state=%s visible=%d local=%s remote=%s", fd, proto, type,
           state, visible, local, remote);
}

/* "127.0.0.1:4000" or "[::1]:4000", as Rust's SocketAddr prints it. */
static void addr_text(const struct sockaddr_storage *ss, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, size, "%s:%d", host, ntohs(in->sin_port));
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, size, "[%s]:%d", host, ntohs(in6->sin6_port));
    }
}

static void local_text(int fd, char *out, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        die_at("getsockname", HERE);
    addr_text(&ss, out, size);
}

static void remote_text(int fd, char *out, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        die_at("getpeername", HERE);
    addr_text(&ss, out, size);
}

/* Binds an inet socket to loopback port 0; returns 0, or -1 if the family is missing. */
static int bind_loopback(int fd, int family)
{
    struct sockaddr_storage ss = { 0 };
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        len = sizeof *in6;
    }
    return bind(fd, (struct sockaddr *)&ss, len);
}

/* A listener, a client connected to it and the accepted end: LISTEN + 2 ESTABLISHED. */
static void tcp_family(int family, const char *proto)
{
    int listener = socket(family, SOCK_STREAM, 0);
    if (listener < 0 || bind_loopback(listener, family) < 0) {
        expect("skip syscall=socket errno=%s what=%s", errno_name(errno), proto);
        if (listener >= 0)
            close(listener);
        return;
    }
    if (listen(listener, 8) < 0)
        die_at("listen", HERE);
    char local[80], remote[80];
    local_text(listener, local, sizeof local);
    print_sock(listener, proto, "stream", "LISTEN", 1, local, "-");

    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(listener, (struct sockaddr *)&ss, &len);
    int client = socket(family, SOCK_STREAM, 0);
    if (client < 0 || connect(client, (struct sockaddr *)&ss, len) < 0)
        die_at("connect", HERE);
    int server = accept(listener, NULL, NULL);
    if (server < 0)
        die_at("accept", HERE);
    local_text(client, local, sizeof local);
    remote_text(client, remote, sizeof remote);
    print_sock(client, proto, "stream", "ESTABLISHED", 1, local, remote);
    local_text(server, local, sizeof local);
    remote_text(server, remote, sizeof remote);
    print_sock(server, proto, "stream", "ESTABLISHED", 1, local, remote);
}

/* A bound UDP socket: listed, not connected. */
static void udp_family(int family, const char *proto)
{
    int fd = socket(family, SOCK_DGRAM, 0);
    if (fd < 0 || bind_loopback(fd, family) < 0) {
        expect("skip syscall=socket errno=%s what=%s", errno_name(errno), proto);
        if (fd >= 0)
            close(fd);
        return;
    }
    char local[80];
    local_text(fd, local, sizeof local);
    print_sock(fd, proto, "dgram", "UNCONN", 1, local, "-");
}

static void unix_family(void)
{
    /* stream, bound to a path, listening */
    int listener = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    snprintf(unix_path, sizeof unix_path, "/tmp/fdbg-zoo-%d.sock", getpid());
    unlink(unix_path);
    memcpy(addr.sun_path, unix_path, strlen(unix_path) + 1);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(listener, 8) < 0)
        die_at("unix listen", HERE);
    print_sock(listener, "unix", "stream", "LISTEN", 1, unix_path, "-");

    /* stream, unnamed, connected (socketpair) */
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0)
        die_at("socketpair", HERE);
    print_sock(pair[0], "unix", "stream", "ESTABLISHED", 1, "-", "-");
    print_sock(pair[1], "unix", "stream", "ESTABLISHED", 1, "-", "-");

    /* dgram, bound to an abstract name */
    int bound = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un abstract = { .sun_family = AF_UNIX };
    char name[64];
    int n = snprintf(name, sizeof name, "fdbg-zoo-%d", getpid());
    memcpy(abstract.sun_path + 1, name, (size_t)n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    if (bound < 0 || bind(bound, (struct sockaddr *)&abstract, len) < 0)
        die_at("unix dgram bind", HERE);
    char shown[80];
    snprintf(shown, sizeof shown, "@%s", name);
    print_sock(bound, "unix", "dgram", "UNCONN", 1, shown, "-");

    /* dgram, never bound: still listed in /proc/net/unix */
    int unbound = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (unbound < 0)
        die_at("socket", HERE);
    print_sock(unbound, "unix", "dgram", "UNCONN", 1, "-", "-");
}

static void netlink_family(void)
{
    int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
    socklen_t len = sizeof nl;
    if (fd < 0 || bind(fd, (struct sockaddr *)&nl, sizeof nl) < 0 ||
        getsockname(fd, (struct sockaddr *)&nl, &len) < 0)
        die_at("netlink", HERE);
    char local[40];
    snprintf(local, sizeof local, "route:%u", nl.nl_pid);
    print_sock(fd, "netlink", "raw", "UNCONN", 1, local, "-");

    /* never bound (no bind, no send): in no table */
    int unbound = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    if (unbound < 0)
        die_at("socket", HERE);
    print_sock(unbound, "netlink", "raw", "UNCONNECTED", 0, "-", "-");
}

/* Need CAP_NET_RAW: optional. */
static void raw_families(void)
{
    int raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (raw < 0)
        expect("skip syscall=socket errno=%s what=raw", errno_name(errno));
    else
        print_sock(raw, "raw", "raw", "UNCONN", 1, "0.0.0.0:1", "-");
    int packet = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_ALL));
    if (packet < 0)
        expect("skip syscall=socket errno=%s what=packet", errno_name(errno));
    else
        print_sock(packet, "packet", "dgram", "UNCONN", 1, "0x0003:0", "-");
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    tcp_family(AF_INET, "tcp");
    tcp_family(AF_INET6, "tcp6");
    udp_family(AF_INET, "udp");
    udp_family(AF_INET6, "udp6");
    unix_family();
    netlink_family();
    raw_families();

    /* The scenario's leak: created, never bound or connected. */
    int never_udp = socket(AF_INET, SOCK_DGRAM, 0);
    int never_tcp6 = socket(AF_INET6, SOCK_STREAM, 0);
    if (never_udp < 0)
        die_at("socket", HERE);
    print_sock(never_udp, "udp", "dgram", "UNCONNECTED", 0, "0.0.0.0:0", "-");
    if (never_tcp6 >= 0)
        print_sock(never_tcp6, "tcp6", "stream", "UNCONNECTED", 0, "[::]:0", "-");

    expect_hold(1);
    unlink(unix_path);
    return 0;
}
