/* statsd.h: a tiny statsd client, the kind of SDK a server calls on every event. */
#ifndef STATSD_H
#define STATSD_H

struct statsd {
    int sock;
};

/* Creates the client's UDP socket and connects it to $STATSD_HOST:8125.
 * Returns 0, or -1 if statsd is not configured (then the client is unusable). */
int statsd_init(struct statsd *d);
void statsd_count(struct statsd *d, const char *metric);
void statsd_close(struct statsd *d);

#endif
