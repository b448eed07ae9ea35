/* blocks_signals: a program whose thread blocks every signal (as servers
 * that take signals through sigwait or a signalfd do). For each byte read
 * on stdin it opens /dev/null and never closes it; EOF ends it.
 *
 * usage: blocks_signals
 *   EXPECT start pid=N
 *   EXPECT leak fd=N syscall=openat ...    one per byte
 */
#include "expect.h"

#include <fcntl.h>
#include <signal.h>

int main(int argc, char **argv)
{
    sigset_t all;
    sigfillset(&all);
    if (sigprocmask(SIG_BLOCK, &all, NULL) != 0)
        die_at("sigprocmask", HERE);
    expect_start(&argc, argv);
    char byte;
    while (read(0, &byte, 1) == 1)
        TRACK("leak", "openat", open("/dev/null", O_RDONLY));
    return 0;
}
