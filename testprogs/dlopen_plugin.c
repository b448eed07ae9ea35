/* dlopen_plugin: loads libplugin.so (next to the program) with dlopen(3)
 * when a line comes on stdin, then calls its plugin_open_log() once and
 * holds until EOF.
 *
 * usage: dlopen_plugin
 *   EXPECT start pid=N
 *   EXPECT loaded
 *   EXPECT leak fd=N syscall=openat
 */
#include "expect.h"

#include <dlfcn.h>
#include <libgen.h>

int main(int argc, char **argv)
{
    expect_start(&argc, argv);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0)
        die_at("readlink", HERE);
    exe[n] = 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/libplugin.so", dirname(exe));
    char byte;
    if (read(0, &byte, 1) != 1)
        return 0;
    void *plugin = dlopen(path, RTLD_NOW);
    if (!plugin)
        die_at("dlopen", HERE);
    expect("loaded");
    int (*open_log)(void) = (int (*)(void))dlsym(plugin, "plugin_open_log");
    if (!open_log)
        die_at("dlsym", HERE);
    int fd = open_log();
    expect("leak fd=%d syscall=openat", fd);
    while (read(0, &byte, 1) == 1)
        ;
    return 0;
}
