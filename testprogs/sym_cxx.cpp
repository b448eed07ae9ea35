/* sym_cxx: a C++ program built -O2 -g -fomit-frame-pointer, linked with
 * libsymlib.so (rpath $ORIGIN). on_login() calls the library through the
 * always-inlined helper connect_metrics(), which prints
 * "EXPECT call site=sym_cxx.cpp:N fn=connect_metrics" for the line of the
 * library call; the library prints the leak.
 *
 * usage: sym_cxx [--wait]
 */
#include "expect.h"
#include "symlib.h"

static inline __attribute__((always_inline)) int connect_metrics(int port)
{
    struct site s;
    int fd = AT(s, metrics::open_statsd_socket(port));
    expect("call site=%s:%d fn=%s", s.file, s.line, s.fn);
    return fd;
}

__attribute__((noinline)) static int on_login(int user)
{
    int fd = connect_metrics(8125 + user);
    expect("login user=%d fd=%d", user, fd);
    return fd;
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    int fd = on_login(argc);
    expect("done leaks=1 fd=%d", fd);
    return 0;
}
