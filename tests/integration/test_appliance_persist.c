/* test_appliance_persist.c: --pool-file keeps regions, snapshots, keys and the
 * id counter across SIGTERM and across kill -9 after an acknowledged write. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>

#include "harness.h"
#include "rawwire.h"

static struct harness_proc app;
static char pool_path[128];
static const char *args[] = { "--pool-size", "64M", "--chunk-size", "16K", "--pool-file",
                              pool_path, NULL };

static void setup(void)
{
        harness_init(&app);
        snprintf(pool_path, sizeof(pool_path), "%s/pool", app.dir);
        harness_appliance_start(&app, args);
}

static void teardown(void)
{
        harness_cleanup(&app);
}

TestSuite(appliance_persist, .init = setup, .fini = teardown, .timeout = 120);

#define RSIZE (1u << 20)

struct state {
        uint64_t id[3], snap, freed;
        uint8_t key[3][XMEM_KEY_SIZE], snap_key[XMEM_KEY_SIZE], freed_key[XMEM_KEY_SIZE];
        uint8_t *want[3], *want_snap;
};

static void state_done(struct state *s)
{
        for (int i = 0; i < 3; i++)
                free(s->want[i]);
        free(s->want_snap);
}

static int conn(void)
{
        int fd = harness_connect_tcp(&app);
        cr_assert_geq(fd, 0);
        return fd;
}

static void write_pattern(int fd, struct state *s, int i, uint64_t seed, uint64_t off, size_t len)
{
        harness_pattern(s->want[i] + off, len, seed, off);
        cr_assert_eq(raw_write(fd, s->id[i], s->key[i], off, s->want[i] + off, len), 0);
}

/* Regions with random-looking data at odd offsets, a snapshot taken between
 * writes, a freed region, a shrunk region: every kind of metadata change. */
static void populate(struct state *s)
{
        int fd = conn();
        struct xmem_wire_hdr rep;
        uint64_t size;

        for (int i = 0; i < 3; i++) {
                raw_alloc(fd, RSIZE, &s->id[i], s->key[i]);
                s->want[i] = calloc(1, RSIZE);
        }
        write_pattern(fd, s, 0, 11, 0, RSIZE);
        write_pattern(fd, s, 1, 12, 12345, 300000);
        write_pattern(fd, s, 2, 13, 70000, 5000);
        cr_assert_eq(raw_op(fd, XMEM_OP_SNAPSHOT, s->id[0], s->key[0], 0, &rep), 0);
        s->snap = rep.region;
        memcpy(s->snap_key, rep.key, XMEM_KEY_SIZE);
        s->want_snap = malloc(RSIZE);
        memcpy(s->want_snap, s->want[0], RSIZE);
        write_pattern(fd, s, 0, 21, 5000, 100000); /* copy-on-write after the snapshot */
        raw_alloc(fd, RSIZE, &s->freed, s->freed_key);
        cr_assert_eq(raw_op(fd, XMEM_OP_FREE, s->freed, s->freed_key, 0, NULL), 0);
        cr_assert_eq(raw_op(fd, XMEM_OP_RESIZE, s->id[2], s->key[2], RSIZE / 2, &rep), 0);
        size = rep.arg;
        cr_assert_eq(size, RSIZE / 2);
        close(fd);
}

static void verify(struct state *s)
{
        int fd = conn();
        uint8_t *buf = malloc(RSIZE), wrong[XMEM_KEY_SIZE];
        uint64_t new_id;
        uint8_t new_key[XMEM_KEY_SIZE];

        for (int i = 0; i < 2; i++) {
                cr_assert_eq(raw_read(fd, s->id[i], s->key[i], 0, buf, RSIZE), 0, "region %d", i);
                cr_assert_arr_eq(buf, s->want[i], RSIZE, "region %d differs after restart", i);
        }
        cr_assert_eq(raw_read(fd, s->id[2], s->key[2], 0, buf, RSIZE / 2), 0);
        cr_assert_arr_eq(buf, s->want[2], RSIZE / 2);
        cr_assert_eq(raw_read(fd, s->id[2], s->key[2], 0, buf, RSIZE), -ERANGE, "shrink kept");
        cr_assert_eq(raw_read(fd, s->snap, s->snap_key, 0, buf, RSIZE), 0);
        cr_assert_arr_eq(buf, s->want_snap, RSIZE, "snapshot differs after restart");
        cr_assert_eq(raw_write(fd, s->snap, s->snap_key, 0, buf, 16), -EROFS);
        cr_assert_eq(raw_read(fd, s->freed, s->freed_key, 0, buf, 16), -ENOENT);
        memcpy(wrong, s->key[1], XMEM_KEY_SIZE);
        wrong[0] ^= 0x80;
        cr_assert_eq(raw_read(fd, s->id[1], wrong, 0, buf, 16), -EACCES);
        raw_alloc(fd, 4096, &new_id, new_key);
        cr_assert_gt(new_id, s->freed, "ids are never reused, even of freed regions");
        /* the region still works: write after restart, copy-on-write against the snapshot */
        write_pattern(fd, s, 0, 31, 0, 4096);
        cr_assert_eq(raw_read(fd, s->snap, s->snap_key, 0, buf, 4096), 0);
        cr_assert_arr_eq(buf, s->want_snap, 4096);
        free(buf);
        close(fd);
}

Test(appliance_persist, survives_sigterm)
{
        struct state s = {};
        int status;

        populate(&s);
        status = harness_stop(&app);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "clean exit, status %d", status);
        harness_appliance_start(&app, args);
        verify(&s);
        /* and once more, after writes made by the restarted appliance */
        harness_stop(&app);
        harness_appliance_start(&app, args);
        verify(&s);
        state_done(&s);
}

Test(appliance_persist, survives_kill_9_after_ack)
{
        struct state s = {};
        char meta[160];
        int fd;

        populate(&s);
        harness_kill(&app);
        harness_appliance_start(&app, args);
        verify(&s);
        /* a torn record at the end of the journal (a crash mid-append) is ignored */
        harness_kill(&app);
        snprintf(meta, sizeof(meta), "%s.meta", pool_path);
        fd = open(meta, O_WRONLY | O_APPEND);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, "XMJL\3\0\0\0\xff\0\0", 11), 11);
        close(fd);
        harness_appliance_start(&app, args);
        verify(&s);
        state_done(&s);
}

Test(appliance_persist, wrong_chunk_size_refused)
{
        static const char *const bad[] = { "--pool-size", "64M", "--chunk-size", "64K",
                                           "--pool-file", pool_path, "--listen", "tcp://127.0.0.1:1", NULL };
        const char *bin = getenv("XMEM_APPLIANCE");
        int fd = conn(), status;
        uint8_t key[XMEM_KEY_SIZE];
        uint64_t id;
        pid_t pid;

        raw_alloc(fd, 4096, &id, key);
        close(fd);
        harness_stop(&app);
        pid_t parent = getpid();
        pid = fork();
        if (pid == 0) {
                const char *argv[16] = { bin };
                harness_die_with(parent); /* if it serves after all: the test times out */
                for (int i = 0; bad[i]; i++)
                        argv[i + 1] = bad[i];
                execv(bin, (char *const *)argv);
                _exit(127);
        }
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1,
                  "a pool made with another chunk size must not start (status %d)", status);
}
