/* symlib.h: the shared library of sym_cxx (libsymlib.so). */
#ifndef SYMLIB_H
#define SYMLIB_H

namespace metrics {
/* Opens a UDP socket for statsd and, the bug, never closes it. */
int open_statsd_socket(int port);
}

#endif
