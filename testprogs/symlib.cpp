/* symlib.cpp: libsymlib.so, built -O2 -g -fomit-frame-pointer -fPIC -shared.
 * Its function leaks a socket; sym_cxx calls it through an inlined helper.
 * Prints "EXPECT leak ... fn=open_statsd_socket" with the socket() line.
 */
#include "expect.h"
#include "symlib.h"

#include <sys/socket.h>

namespace metrics {

int open_statsd_socket(int port)
{
    int fd = TRACK("leak", "socket", socket(AF_INET, SOCK_DGRAM, 0));
    expect("port value=%d", port);
    return fd;
}

}
