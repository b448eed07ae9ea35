/* dbgi_server: a C++ login server built -g and split like its library
 * libdbgilib.so (see dbgi_lib.cpp): the DWARF of both only on a
 * debuginfod server, their symbol tables kept. Each login leaks two fds:
 * an eventfd the server opens itself ("EXPECT leak ... fn=login") and the
 * library's socket, whose call it prints as "EXPECT call site=FILE:LINE
 * fn=login".
 *
 * usage: dbgi_server [LOGINS] [--wait] [--hold]   (3 logins by default)
 */
#include "expect.h"
#include "dbgi_lib.h"

#include <sys/eventfd.h>

namespace gateway {

class Server {
public:
    __attribute__((noinline)) void login(int user)
    {
        TRACK("leak", "eventfd", eventfd(0, 0));
        struct site s;
        AT(s, audit::open_channel(user));
        expect("call site=%s:%d fn=%s", s.file, s.line, s.fn);
        logins_++;
    }

    int logins() const { return logins_; }

private:
    int logins_ = 0;
};

}

int main(int argc, char **argv)
{
    int hold = take_flag(&argc, argv, "--hold");
    expect_start(&argc, argv);
    int logins = argc > 1 ? atoi(argv[1]) : 3;
    gateway::Server server;
    for (int user = 0; user < logins; user++)
        server.login(user);
    expect("done logins=%d leaks=%d", server.logins(), 2 * server.logins());
    expect_hold(hold);
    return 0;
}
