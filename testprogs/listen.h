/* listen.h — the TCP listener of the login servers: 127.0.0.1 on PORT
 * (0: ephemeral), announced as "EXPECT listen port=N fd=N".
 */
#ifndef LISTEN_H
#define LISTEN_H

#include "expect.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static inline int listen_on(int port, int backlog)
{
    int fd = TRACK("open", "socket", socket(AF_INET, SOCK_STREAM, 0));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        die_at("bind/listen", HERE);
    expect("listen port=%d fd=%d", ntohs(addr.sin_port), fd);
    return fd;
}

#endif
