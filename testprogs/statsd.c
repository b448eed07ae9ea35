/* statsd.c: the bug of the scenario. statsd_init() creates a UDP socket and,
 * when no statsd host is configured, returns early without closing it: one
 * leaked socket per call, never bound or connected, so invisible to netstat.
 * With STATSD_HOST set it connects and the socket is closed by statsd_close().
 */
#include "expect.h"
#include "statsd.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* noinline: even at -O2 the socket() call must be attributed to statsd_init. */
__attribute__((noinline)) int statsd_init(struct statsd *d)
{
    struct site created;
    d->sock = AT(created, socket(AF_INET, SOCK_DGRAM, 0));
    if (d->sock < 0)
        return -1;

    const char *host = getenv("STATSD_HOST");
    if (host == NULL) {
        /* The bug: this early return forgets close(d->sock). */
        expect_fd_at("leak", d->sock, "socket", created);
        return -1;
    }
    expect_fd_at("open", d->sock, "socket", created);

    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(8125) };
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 ||
        connect(d->sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
        statsd_close(d);
        return -1;
    }
    return 0;
}

void statsd_count(struct statsd *d, const char *metric)
{
    char packet[128];
    int len = snprintf(packet, sizeof packet, "%s:1|c", metric);
    (void)send(d->sock, packet, (size_t)len, 0); /* UDP: nobody listening is fine */
}

void statsd_close(struct statsd *d)
{
    CLOSE(d->sock);
    d->sock = -1;
}
