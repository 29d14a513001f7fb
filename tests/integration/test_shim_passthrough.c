/* test_shim_passthrough.c: with no memd reachable, libxmem-shim.so preloaded
 * into real programs changes nothing: same output, same exit status. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* Run ARGV (with the shim preloaded when PRELOAD), stdout into OUT. Returns
 * the wait status. */
static int run(bool preload, char *const argv[], char *out, size_t out_len)
{
        const char *shim = getenv("XMEM_SHIM");

        cr_assert(shim, "XMEM_SHIM not set (meson sets it)");
        return harness_run_output(argv, "/nonexistent/xmem/memd.sock", preload ? shim : NULL, out,
                                  out_len);
}

static void same(char *const argv[])
{
        char a[8192], b[8192];
        int sa = run(false, argv, a, sizeof(a));
        int sb = run(true, argv, b, sizeof(b));

        cr_expect_eq(sa, sb, "%s: status %#x without the shim, %#x with it", argv[0], sa, sb);
        cr_expect_str_eq(a, b, "%s: output differs", argv[0]);
}

Test(shim_passthrough, test_program)
{
        const char *prog = getenv("XMEM_SHIM_PROG");
        char out[8192];

        cr_assert(prog);
        char *argv[] = { (char *)prog, "basic", NULL };
        int st = run(true, argv, out, sizeof(out));
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x, output: %s", st, out);
        cr_expect_str_eq(out, "OK\n");
}

Test(shim_passthrough, system_programs)
{
        char *t[] = { "/bin/true", NULL };
        char *f[] = { "/bin/false", NULL };
        char *sh[] = { "/bin/sh", "-c", "x=$(echo hi | tr a-z A-Z); echo $x; (exit 7)", NULL };
        char *sh2[] = { "/bin/sh", "-c", "for i in 1 2 3; do echo $i; done | sort -r; exit 3",
                        NULL };
        same(t);
        same(f);
        same(sh);
        same(sh2);
        if (access("/usr/bin/python3", X_OK) == 0) {
                char *py[] = { "/usr/bin/python3", "-c",
                               "import json,hashlib,threading\n"
                               "d={str(i):[i]*i for i in range(300)}\n"
                               "t=threading.Thread(target=lambda:sum(range(10**5)));t.start();t.join()\n"
                               "print(hashlib.sha256(json.dumps(d).encode()).hexdigest())\n"
                               "raise SystemExit(5)",
                               NULL };
                same(py);
        }
}

/* The interposed allocator and mapping calls, and xmem's own API, nothing else. */
Test(shim_passthrough, shim_exports_only_interposed_symbols)
{
        char cmd[4096], out[8192];
        snprintf(cmd, sizeof(cmd), "nm -D --defined-only '%s' | awk '{print $3}' | sort | tr '\\n' ' '",
                 getenv("XMEM_SHIM"));
        char *argv[] = { "/bin/sh", "-c", cmd, NULL };
        int st = run(false, argv, out, sizeof(out));
        if (WIFEXITED(st) && strstr(out, "malloc") == NULL)
                cr_skip_test("nm not available");
        cr_expect_str_eq(out,
                         "aligned_alloc calloc dallocx free madvise mallctl mallctlbymib "
                         "mallctlnametomib malloc malloc_stats_print malloc_usable_size mallocx "
                         "memalign mmap mmap64 mremap munmap nallocx posix_memalign pvalloc "
                         "rallocx realloc reallocarray sallocx sdallocx valloc xallocx "
                         /* include/xmem/xmem.h, the named roots of a restored arena */
                         "xmem_root_get xmem_root_set ");
}
