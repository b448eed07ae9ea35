/* login_server: the leaky game server of the scenario, single-threaded.
 * Each connection sends "LOGIN <name>\n", gets "OK\n", then logs out by
 * closing its side; the server closes the accepted socket at EOF. Every
 * login leaks one socket inside on_login() -> statsd_init(). A connection
 * sending "QUIT\n" stops the server (exit 0); otherwise it runs until killed.
 *
 * With --threads, each connection is served by a thread of its own,
 * created for it and gone after it (a thread per session).
 *
 * usage: login_server [--wait] [--threads] [PORT]   (PORT 0 or absent: ephemeral)
 */
#include "expect.h"
#include "listen.h"

#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

void on_login(const char *name);

/* Reads one line without the newline; returns its length, or -1 at EOF/error. */
static int read_line(int fd, char *buf, size_t size)
{
    size_t len = 0;
    char c;
    while (read(fd, &c, 1) == 1) {
        if (c == '\n') {
            buf[len] = '\0';
            return (int)len;
        }
        if (len + 1 < size)
            buf[len++] = c;
    }
    return -1;
}

/* Handles one connection; returns 0 when asked to quit. */
static int serve(int conn)
{
    char line[256];
    int keep_going = 1;
    if (read_line(conn, line, sizeof line) >= 0) {
        if (strncmp(line, "LOGIN ", 6) == 0) {
            on_login(line + 6);
            (void)write(conn, "OK\n", 3);
            while (read(conn, line, sizeof line) > 0) /* until logout (EOF) */
                ;
        } else if (strcmp(line, "QUIT") == 0) {
            keep_going = 0;
        }
    }
    CLOSE(conn);
    return keep_going;
}

/* A session's thread: serves its connection; a QUIT ends the server. */
static void *session(void *arg)
{
    if (!serve((int)(long)arg)) {
        expect("done");
        exit(0);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = take_flag(&argc, argv, "--threads");
    expect_start(&argc, argv);
    int listener = listen_on(argc > 1 ? atoi(argv[1]) : 0, 128);
    for (;;) {
        int conn = TRACK("open", "accept", accept(listener, NULL, NULL));
        if (threads) {
            pthread_t thread;
            if (pthread_create(&thread, NULL, session, (void *)(long)conn) != 0)
                die_at("pthread_create", HERE);
            pthread_detach(thread);
            continue;
        }
        if (!serve(conn))
            break;
    }
    CLOSE(listener);
    expect("done");
    return 0;
}
