/* dbgi_lib.h: libdbgilib.so's interface (see dbgi_lib.cpp). */
#ifndef DBGI_LIB_H
#define DBGI_LIB_H

namespace audit {

/* Opens the audit channel of a login, a UDP socket that is never closed. */
int open_channel(int user);

}

#endif
