/* noprof.c: what jemalloc's heap profiler calls from libm and the libgcc
 * unwinder, replaced so the shim depends on libc alone (docs/shim.md). Only
 * MALLOC_CONF=prof:true reaches them: the process stops with one line. */
#include <string.h>
#include <unistd.h>

#include "shim.h"

static _Noreturn void noprof_fatal(void)
{
        static const char msg[] =
            "xmem-shim: jemalloc heap profiling (MALLOC_CONF prof) is not available "
            "under libxmem-shim.so\n";

        if (write(STDERR_FILENO, msg, strlen(msg)) < 0)
                _exit(127);
        _exit(127);
}

double shim_noprof_log(double x)
{
        (void)x;
        noprof_fatal();
}

double shim_noprof_exp(double x)
{
        (void)x;
        noprof_fatal();
}

double shim_noprof_round(double x)
{
        (void)x;
        noprof_fatal();
}

int shim_noprof_unwind_backtrace(void *trace, void *arg)
{
        (void)trace;
        (void)arg;
        noprof_fatal();
}

unsigned long shim_noprof_unwind_getip(void *context)
{
        (void)context;
        noprof_fatal();
}
