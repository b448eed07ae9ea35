/* closewait_client: connects N times to closewait_server and closes each
 * connection at once, leaving the server's ends in CLOSE_WAIT.
 *
 * usage: closewait_client PORT N
 *   EXPECT closed k=K       after each connection is closed
 */
#include "expect.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: closewait_client PORT N\n");
        return 2;
    }
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    for (int k = 1; k <= atoi(argv[2]); k++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
            die_at("connect", HERE);
        close(fd);
        expect("closed k=%d", k);
    }
    return 0;
}
