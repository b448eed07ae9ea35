/* closewait_server: accepts connections and never closes them. Once a client
 * closes its end, the server's socket sits in CLOSE_WAIT: a leak that netstat
 * does show, as thousands of CLOSE_WAIT on the server port.
 *
 * usage: closewait_server [--wait]      (runs until killed)
 *   EXPECT listen port=N fd=N
 *   EXPECT leak fd=N syscall=accept ...  once per connection
 */
#include "expect.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    int listener = TRACK("leak", "socket", socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, len) < 0 || listen(listener, 128) < 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) < 0)
        die_at("bind/listen", HERE);
    expect("listen port=%d fd=%d", ntohs(addr.sin_port), listener);
    for (;;)
        TRACK("leak", "accept", accept(listener, NULL, NULL));
}
