/* plugin.c: libplugin.so, loaded by dlopen_plugin with dlopen(3) only
 * after a line on stdin: a function that is in no loaded object when fdbg
 * attaches. plugin_open_log() opens /dev/null and never closes it.
 */
#include <fcntl.h>

__attribute__((noinline)) int plugin_open_log(void)
{
    return open("/dev/null", O_RDONLY);
}
