/* dbgi_lib.cpp: libdbgilib.so, built -g, then split: its DWARF into a
 * separate debug file that only a debuginfod server has, the library
 * stripped of its debug info (symbol table kept). Leaks one socket per
 * call and prints "EXPECT leak ... fn=open_channel" with its line.
 */
#include "expect.h"
#include "dbgi_lib.h"

#include <sys/socket.h>

namespace audit {

int open_channel(int user)
{
    int fd = TRACK("leak", "socket", socket(AF_INET, SOCK_DGRAM, 0));
    expect("channel user=%d fd=%d", user, fd);
    return fd;
}

}
