/* sym_c: leaks a FILE from fopen() (whose openat runs inside libc) and a
 * socket; built with -g, and again stripped (sym_c_stripped). Tests check
 * that frames[0] is the caller of fopen, at the fopen line.
 *
 * usage: sym_c [--wait]
 */
#include "expect.h"

#include <sys/socket.h>

static FILE *open_log(void)
{
    struct site s;
    FILE *log = AT(s, fopen("/dev/null", "r"));
    if (!log)
        die_at("fopen", s);
    expect_fd_at("leak", fileno(log), "openat", s);
    return log;
}

static int open_socket(void)
{
    return TRACK("leak", "socket", socket(AF_UNIX, SOCK_DGRAM, 0));
}

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    open_log();
    open_socket();
    expect("done leaks=2");
    return 0;
}
