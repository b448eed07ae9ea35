/* login_client: performs N sequential logins against login_server. Each one
 * connects, sends "LOGIN user<K>\n", reads "OK\n", shuts down its sending
 * side and waits for the server to close: so when "EXPECT login k=K" is
 * printed, the server has finished with that connection. With --quit it
 * then asks the server to exit.
 *
 * usage: login_client PORT N [--quit]
 */
#include "expect.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die_at("connect", HERE);
    return fd;
}

static void send_all(int fd, const char *text)
{
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        die_at("write", HERE);
}

int main(int argc, char **argv)
{
    int quit = take_flag(&argc, argv, "--quit");
    if (argc != 3) {
        fprintf(stderr, "usage: login_client PORT N [--quit]\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    for (int k = 1; k <= n; k++) {
        int fd = connect_to(port);
        char line[64];
        snprintf(line, sizeof line, "LOGIN user%d\n", k);
        send_all(fd, line);
        char reply[4] = "";
        if (read(fd, reply, 3) != 3 || strcmp(reply, "OK\n") != 0)
            die_at("reading OK", HERE);
        shutdown(fd, SHUT_WR); /* logout */
        while (read(fd, line, sizeof line) > 0)
            ;
        close(fd);
        expect("login k=%d", k);
    }
    if (quit) {
        int fd = connect_to(port);
        send_all(fd, "QUIT\n");
        while (read(fd, &(char){ 0 }, 1) > 0)
            ;
        close(fd);
    }
    return 0;
}
