/* work_main.c: xmem-bench-work, the benchmark's workload program for every
 * system but the floor: takes its working set from malloc (under xmem's shim
 * the external arena), runs one workload over it, prints JSON lines.
 *   xmem-bench-work KIND MIB [OPS] [SECONDS]
 * Exit 0; 2 on a wrong read; 3 when the memory cannot be had; 1 on usage.
 * Runs under LD_PRELOAD of the shim, so it is never instrumented. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "work.h"

int main(int argc, char **argv)
{
        struct work_opts o = {.ops = 1000000, .seconds = 10, .zipf_theta = 0.99};
        uint64_t size;
        char *mem;
        int r;

        if (argc < 3 || work_kind_parse(argv[1], &o.kind) < 0 || atoll(argv[2]) < 1) {
                fprintf(stderr, "usage: xmem-bench-work seq_write|seq_read|rand_read|rand_write|"
                                "zipf_read MIB [OPS] [SECONDS]\n");
                return 1;
        }
        size = (uint64_t)atoll(argv[2]) << 20;
        if (argc > 3)
                o.ops = (uint64_t)atoll(argv[3]);
        if (argc > 4)
                o.seconds = atof(argv[4]);
        mem = malloc(size + 4096);
        if (!mem) {
                printf("{\"error\":\"malloc %llu MiB: out of memory\"}\n",
                       (unsigned long long)(size >> 20));
                return 3;
        }
        r = work_run((void *)(((uintptr_t)mem + 4095) & ~(uintptr_t)4095), size, &o);
        free(mem);
        return r == -EIO ? 2 : r < 0 ? 3 : 0;
}
