/* login.c: the login handler. Every login initialises a statsd client to
 * count it; when statsd is not configured the client leaks its socket. */
#include "statsd.h"

void on_login(const char *name)
{
    struct statsd d;
    if (statsd_init(&d) < 0)
        return; /* statsd disabled: carry on without metrics */
    statsd_count(&d, "logins");
    statsd_close(&d);
    (void)name;
}
