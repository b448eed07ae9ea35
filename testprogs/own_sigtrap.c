/* own_sigtrap: a program with a SIGTRAP handler of its own (as programs
 * that use SIGTRAP for their own breakpoints have). For each byte read on
 * stdin it opens /dev/null and never closes it, then raises SIGTRAP, which
 * its handler counts; EOF ends it.
 *
 * usage: own_sigtrap
 *   EXPECT start pid=N
 *   EXPECT leak fd=N syscall=openat ...    one per byte
 *   EXPECT trap n=N                        the handler ran N times in all
 */
#include "expect.h"

#include <fcntl.h>
#include <signal.h>

static volatile sig_atomic_t traps;

static void on_trap(int sig)
{
    (void)sig;
    traps++;
}

int main(int argc, char **argv)
{
    struct sigaction act = { .sa_handler = on_trap };
    sigemptyset(&act.sa_mask);
    if (sigaction(SIGTRAP, &act, NULL) != 0)
        die_at("sigaction", HERE);
    expect_start(&argc, argv);
    char byte;
    while (read(0, &byte, 1) == 1) {
        TRACK("leak", "openat", open("/dev/null", O_RDONLY));
        raise(SIGTRAP);
        expect("trap n=%d", (int)traps);
    }
    return 0;
}
