/* test_convert.c: conversion of a running process's local memory to file
 * memory and back at the same addresses (docs/shim.md "Conversion"), with a
 * real memd and the real shim: conv_prog's 4 threads rewrite and check
 * 256 MiB of versioned pages without a pause while memd's convert requests
 * (xmemctl convert) move its local extents to file memory and back 20
 * times; every page checks, no write is lost, no thread faults. Root and a
 * memory cgroup (v1 or v2). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define MIB (1ULL << 20)

static struct {
        struct harness_memd md;
        struct harness_cg cg;
        struct harness_child prog;
        char files[64];
        char swapfile[96]; /* a swap file on while set */
} e = {.prog = {.pid = -1}};

static void setup(void)
{
        char name[64];

        signal(SIGPIPE, SIG_IGN);
        e.prog.pid = -1;
        if (!harness_is_root() || !harness_cg_version())
                return; /* the test skips */
        snprintf(e.files, sizeof(e.files), "/tmp/cv-convert.XXXXXX");
        cr_assert(mkdtemp(e.files), "mkdtemp: %m");
        snprintf(name, sizeof(name), "cv-convert-%d", (int)getpid());
        cr_assert(harness_cg_create(&e.cg, name));
        harness_memd_start(&e.md, "/tmp/cv-convert-memd.XXXXXX",
                           (const char *const[]){"--file-dir", e.files, NULL});
}

static void teardown(void)
{
        harness_child_kill(&e.prog);
        if (e.md.pid > 0)
                harness_memd_stop(&e.md);
        if (e.cg.version) {
                harness_cg_kill_all(e.cg.path);
                harness_cg_remove(&e.cg);
        }
        if (e.swapfile[0]) {
                char cmd[160];
                snprintf(cmd, sizeof(cmd), "swapoff %s 2>/dev/null", e.swapfile);
                if (system(cmd) != 0)
                        cr_log_warn("swapoff %s failed", e.swapfile);
                unlink(e.swapfile);
        }
        if (e.files[0])
                rmdir(e.files);
        memset(&e, 0, sizeof(e));
        e.prog.pid = -1;
}

static void need_root_cg(void)
{
        if (!harness_is_root())
                harness_skip(teardown, "needs root");
        if (!e.cg.version)
                harness_skip(teardown, "%s", HARNESS_CG_NONE);
}

static void ctl(const char *const *args, char *out, size_t len)
{
        cr_assert(harness_ctl(&e.md, out, len, args), "xmemctl %s: %s", args[0], out);
}

/* The container's stats, as JSON. */
static const char *stats(void)
{
        static char s[16384];

        ctl((const char *const[]){"--json", "stats", "cv", NULL}, s, sizeof(s));
        return s;
}

/* Poll the container's FIELD until WANT says yes (30 s at most: converting
 * back reads what the kernel dropped from the disk). */
static uint64_t wait_stat(const char *field, bool (*want)(uint64_t))
{
        const char *s = "";
        uint64_t v = 0;

        for (int i = 0; i < 600; i++) {
                s = stats();
                v = harness_json_u64(s, field);
                if (want(v))
                        return v;
                usleep(50000);
        }
        char tail[3072];
        cr_assert_fail("%s stayed at %llu: %s\nmemd.log ends:\n%s", field, (unsigned long long)v,
                       s, harness_file_tail(e.md.log, tail, sizeof(tail)));
        return v;
}

static uint64_t wait_file_bytes(bool (*want)(uint64_t))
{
        return wait_stat("file_bytes", want);
}

static bool all_in_file(uint64_t v)
{
        return v >= 256 * MIB;
}

static bool all_in_file_200(uint64_t v)
{
        return v >= 128 * MIB;
}

static bool none_in_file(uint64_t v)
{
        return v == 0;
}

/* The writes conv_prog has made so far. */
static unsigned long writes(void)
{
        char line[256];
        unsigned long n = 0;

        harness_child_say(&e.prog, "check");
        cr_assert_eq(harness_child_line(&e.prog, line, sizeof(line), 30000), 1);
        cr_assert(sscanf(line, "writes %lu", &n) == 1, "conv_prog: %s", line);
        return n;
}

/* Attach "cv" with LIMIT and ALLOC (local_alloc_limit), start conv_prog
 * MIB THREADS in its cgroup and wait for it to say READY. */
static void start_prog_ext(const char *limit, const char *alloc, const char *external,
                           const char *mib, const char *threads, const char *ready)
{
        const char *prog = getenv("XMEM_CONV_PROG");
        char out[1024], line[256];

        need_root_cg();
        cr_assert(prog, "XMEM_CONV_PROG is not set (run through meson test)");
        ctl((const char *const[]){"attach", "cv", "--cgroup", e.cg.path, "--local-limit", limit,
                                  "--local-alloc-limit", alloc, "--external", external, NULL},
            out, sizeof(out));
        harness_memd_spawn(&e.md, "cv", &e.prog, (const char *const[]){prog, mib, threads, NULL},
                           &e.cg, true);
        cr_assert_eq(harness_child_line(&e.prog, line, sizeof(line), 60000), 1);
        cr_assert_str_eq(line, ready);
}

static void start_prog(const char *limit, const char *alloc, const char *mib, const char *threads,
                       const char *ready)
{
        start_prog_ext(limit, alloc, "64M", mib, threads, ready);
}

/* Stop conv_prog: it verifies every page (VERIFIED: the start of its line). */
static void stop_prog(const char *verified)
{
        char line[256];
        int st;

        harness_child_say(&e.prog, "stop");
        cr_assert_eq(harness_child_line(&e.prog, line, sizeof(line), 120000), 1);
        cr_expect(strncmp(line, verified, strlen(verified)) == 0, "conv_prog: %s", line);
        st = harness_child_wait(&e.prog, 60000);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "conv_prog status %#x", st);
}

/* ROUNDS conversions of conv_prog's 256 MiB to file memory and back while
 * its 4 writers rewrite and check it; then every page verified. */
static void file_round_trips(int rounds)
{
        char out[1024];

        start_prog("1G", "900M", "256", "4", "ready 65536 pages 4 threads");
        unsigned long before = writes();
        for (int i = 0; i < rounds; i++) {
                ctl((const char *const[]){"convert", "cv", "--to", "file", NULL}, out, sizeof(out));
                wait_file_bytes(all_in_file);
                ctl((const char *const[]){"convert", "cv", "--to", "local", NULL}, out,
                    sizeof(out));
                wait_file_bytes(none_in_file);
                cr_assert(harness_child_alive(&e.prog), "conv_prog died in round %d", i);
        }
        unsigned long after = writes();
        cr_expect_gt(after, before, "the writers went on (%lu, %lu)", before, after);
        stop_prog("verified 65536 pages");
        cr_log_info("%lu writes checked across %d conversions", after, 2 * rounds);
}

Test(convert, local_to_file_and_back_20_times_under_writers, .init = setup, .fini = teardown,
     .timeout = 400)
{
        file_round_trips(20);
}

/* The conversion's fault handler with room for one refused fill only: the
 * faults past it are left asleep and woken with the whole range once fills
 * go through again (shim/convert.c), never spun on. */
Test(convert, faults_past_the_deferred_room_are_woken_later, .init = setup, .fini = teardown,
     .timeout = 300)
{
        setenv("XMEM_CONV_DEFER_MAX", "1", 1); /* conv_prog inherits it */
        file_round_trips(6);
}

/* The same to appliance memory (docs/shim.md "Conversion"): the pages go
 * into the process's arena, which it then maps at their addresses; memd
 * serves them there and pages them to the appliance like any arena page. */
static bool all_in_appliance(uint64_t v)
{
        return v >= 256 * MIB;
}

static bool all_in_appliance_64(uint64_t v)
{
        return v >= 64 * MIB;
}

static bool none_in_appliance(uint64_t v)
{
        return v == 0;
}

Test(convert, local_to_appliance_and_back_20_times_under_writers, .init = setup,
     .fini = teardown, .timeout = 400)
{
        char out[1024];

        start_prog_ext("1G", "900M", "1G", "256", "4", "ready 65536 pages 4 threads");
        unsigned long before = writes();
        for (int i = 0; i < 20; i++) {
                ctl((const char *const[]){"convert", "cv", "--to", "appliance", NULL}, out,
                    sizeof(out));
                wait_stat("external_bytes", all_in_appliance);
                ctl((const char *const[]){"convert", "cv", "--to", "local", NULL}, out,
                    sizeof(out));
                wait_stat("external_bytes", none_in_appliance);
                cr_assert(harness_child_alive(&e.prog), "conv_prog died in round %d", i);
        }
        unsigned long after = writes();
        cr_expect_gt(after, before, "the writers went on (%lu, %lu)", before, after);
        cr_expect_eq(harness_json_u64(stats(), "store_errors"), 0);
        stop_prog("verified 65536 pages");
        cr_log_info("%lu writes checked across 40 conversions", after);
}

/* Appliance memory at a local range's address outlives what a process
 * does to its memory: a forked child maps its own copy there (it sees the
 * parent's data, its writes stay its own), and a memd killed and started
 * again serves it (the shim tells the new memd where it is). */
Test(convert, appliance_memory_across_fork_and_memd_restart, .init = setup, .fini = teardown,
     .timeout = 300)
{
        char out[1024], line[256];

        start_prog_ext("1G", "900M", "1G", "64", "0", "ready 16384 pages 0 threads");
        ctl((const char *const[]){"convert", "cv", "--to", "appliance", NULL}, out, sizeof(out));
        wait_stat("external_bytes", all_in_appliance_64);
        harness_child_say(&e.prog, "fork");
        cr_assert_eq(harness_child_line(&e.prog, line, sizeof(line), 120000), 1);
        cr_assert(strncmp(line, "forked ok", 9) == 0, "conv_prog: %s (see %s)", line, e.md.log);

        /* the request comes before the stopped process could resume: the new
         * memd asks again in the page the shim hands back */
        cr_assert_eq(kill(e.prog.pid, SIGSTOP), 0);
        harness_memd_signal(&e.md, SIGKILL);
        harness_memd_restart(&e.md, (const char *const[]){"--file-dir", e.files, NULL});
        ctl((const char *const[]){"convert", "cv", "--to", "local", NULL}, out, sizeof(out));
        cr_assert_eq(kill(e.prog.pid, SIGCONT), 0);
        /* the parent's pages, through the new memd: the child's writes are
         * not among them */
        wait_stat("external_bytes", none_in_appliance);
        stop_prog("verified 16384 pages");
}

/* memd decides by itself (docs/memd.md "Automatic conversion"): memory a
 * process converted to file memory on its own comes back once memd sees room
 * for it, while an operator's "convert --to file" stays until undone. */
Test(convert, memd_converts_back_when_there_is_room, .init = setup, .fini = teardown,
     .timeout = 300)
{
        char out[1024], line[256];

        start_prog("512M", "480M", "200", "2", "ready 51200 pages 2 threads");
        harness_child_say(&e.prog, "convert file");
        cr_assert_eq(harness_child_line(&e.prog, line, sizeof(line), 60000), 1);
        cr_assert(strncmp(line, "converted file", 14) == 0, "conv_prog: %s", line);
        long t0 = harness_now_ms();
        wait_file_bytes(none_in_file);
        cr_log_info("memd converted 200 MiB back by itself in %ld ms", harness_now_ms() - t0);

        ctl((const char *const[]){"convert", "cv", "--to", "file", NULL}, out, sizeof(out));
        wait_file_bytes(all_in_file_200);
        sleep(7); /* longer than memd's 5 s between its own requests */
        uint64_t pinned = harness_json_u64(stats(), "file_bytes");
        cr_expect_geq(pinned, 128 * MIB, "the operator's conversion was undone (%llu left)",
                      (unsigned long long)pinned);
        ctl((const char *const[]){"convert", "cv", "--to", "local", NULL}, out, sizeof(out));
        wait_file_bytes(none_in_file);
        stop_prog("verified 51200 pages");
}

Test(convert, bad_requests_are_refused, .init = setup, .fini = teardown)
{
        char out[1024];

        need_root_cg();
        ctl((const char *const[]){"attach", "cv", "--cgroup", e.cg.path, "--local-limit", "64M",
                                  "--external", "64M", NULL},
            out, sizeof(out));
        cr_expect(!harness_ctl(&e.md, out, sizeof(out),
                               (const char *const[]){"convert", "cv", "--to", "disk", NULL}));
        cr_expect(strstr(out, "params.to: must be local, file or appliance"), "%s", out);
        cr_expect(!harness_ctl(&e.md, out, sizeof(out),
                               (const char *const[]){"convert", "nope", "--to", "file", NULL}));
        cr_expect(strstr(out, "no container nope"), "%s", out);
}

/* The cgroup's pages in swap: v1 memory.stat swap, v2 memory.swap.current. */
static uint64_t swap_bytes(void)
{
        if (e.cg.version == 2)
                return harness_cg_u64(e.cg.path, "memory.swap.current", NULL);
        return harness_cg_u64(e.cg.path, "memory.stat", "swap");
}

/* Claim 9: pages swapped out are read back before the range becomes file
 * memory. A swap file of the test's own (removed after), the cgroup's limit
 * squeezed until conv_prog's idle pages are in swap, then converted. */
Test(convert, swapped_out_pages_are_read_back, .init = setup, .fini = teardown, .timeout = 300)
{
        char line[256], cmd[320];
        const char *swapfile = e.swapfile;

        need_root_cg();
        snprintf(e.swapfile, sizeof(e.swapfile), "%s.swap", e.files);
        snprintf(cmd, sizeof(cmd),
                 "fallocate -l 256M %s && chmod 600 %s && mkswap %s >/dev/null && swapon %s",
                 swapfile, swapfile, swapfile, swapfile);
        if (system(cmd) != 0)
                harness_skip(teardown, "no swap file here (%s)", cmd);
        start_prog("1G", "900M", "128", "0", "ready 32768 pages 0 threads");
        /* squeeze: the idle pages go to swap */
        harness_cg_set_limit(&e.cg, 48 * MIB);
        uint64_t swapped = swap_bytes();
        harness_cg_set_limit(&e.cg, 1024 * MIB);
        /* the pages stay in swap until something reads them */
        harness_child_say(&e.prog, "convert file");
        cr_assert_eq(harness_child_line(&e.prog, line, sizeof(line), 60000), 1);
        cr_log_info("swapped %llu MiB; %s", (unsigned long long)(swapped / MIB), line);
        uint64_t left = swap_bytes();
        harness_child_say(&e.prog, "stop");
        char done[256];
        cr_assert_eq(harness_child_line(&e.prog, done, sizeof(done), 60000), 1);
        cr_expect_geq(swapped, 64 * MIB, "only %llu bytes went to swap",
                      (unsigned long long)swapped);
        cr_expect(strncmp(line, "converted file", 14) == 0, "conv_prog: %s", line);
        cr_expect_lt(left, swapped / 4, "still in swap: %llu of %llu", (unsigned long long)left,
                     (unsigned long long)swapped);
        cr_expect(strncmp(done, "verified 32768 pages", 20) == 0, "conv_prog: %s", done);
}

/* Resize (seed 000 claim 11): a 512M container holding 400 MiB of local
 * memory under constant writes is resized to 64M: memd has its shim convert
 * to file memory and then lowers the cgroup limit, so usage is under 64 MiB
 * within seconds while the writers go on; raised again, memory comes back. */
Test(convert, resize_lowers_and_raises_the_local_limit_live, .init = setup, .fini = teardown,
     .timeout = 400)
{
        char out[2048];

        start_prog("512M", "480M", "400", "4", "ready 102400 pages 4 threads");
        uint64_t before = harness_cg_usage(&e.cg);
        cr_expect_geq(before, 400 * MIB, "usage %llu", (unsigned long long)before);

        long t0 = harness_now_ms();
        ctl((const char *const[]){"resize", "cv", "--local-limit", "64M", NULL}, out, sizeof(out));
        uint64_t usage = 0, limit = 0;
        /* reclaim of dirty file pages: seconds, I/O-bound (docs/memd.md) */
        for (int i = 0; i < 900; i++) {
                limit = harness_cg_limit(&e.cg);
                usage = harness_cg_usage(&e.cg);
                if (limit == 64 * MIB && usage <= 64 * MIB)
                        break;
                usleep(100000);
        }
        long took = harness_now_ms() - t0;
        cr_assert(limit == 64 * MIB && usage <= 64 * MIB, "limit %llu usage %llu after %ld ms",
                  (unsigned long long)limit, (unsigned long long)usage, took);
        cr_log_info("usage %llu MiB -> %llu MiB in %ld ms", (unsigned long long)(before / MIB),
                    (unsigned long long)(usage / MIB), took);
        unsigned long w1 = writes();
        sleep(2);
        unsigned long w2 = writes();
        cr_expect_gt(w2, w1, "the writers go on at 64M (%lu, %lu)", w1, w2);
        cr_expect_eq(harness_cg_oom_kills(&e.cg), 0, "OOM kills");

        ctl((const char *const[]){"resize", "cv", "--local-limit", "512M", NULL}, out, sizeof(out));
        wait_file_bytes(none_in_file);
        cr_expect_eq(harness_cg_limit(&e.cg), 512 * MIB);
        stop_prog("verified 102400 pages");
}
