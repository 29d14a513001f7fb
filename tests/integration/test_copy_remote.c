/* test_copy_remote.c: appliance-to-appliance copy. The client asks appliance A
 * to copy a region to appliance B; the data goes A -> B, never through us. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "harness.h"
#include "transport/transport.h"

#define SIZE (3u << 20)

static struct harness_proc pa, pb;

static void setup(void)
{
        static const char *const args[] = { "--pool-size", "128M", NULL };
        const char *a_args[] = { "--pool-size", "128M", "--peer", pb.tcp_uri, "--peer",
                                 "tcp://127.0.0.1:1", NULL };
        harness_init(&pa);
        harness_init(&pb);
        harness_plan(&pb);
        harness_appliance_start(&pa, a_args);
        harness_appliance_start(&pb, args);
}

static void teardown(void)
{
        harness_cleanup(&pa);
        harness_cleanup(&pb);
}

TestSuite(copy_remote, .init = setup, .fini = teardown, .timeout = 60);

static struct xmem_transport *open_uri(const char *uri)
{
        struct xmem_transport *t = NULL;
        struct xmem_error err = { 0 };
        cr_assert_eq(xmem_transport_open(uri, NULL, &t, &err), 0, "open %s: %s", uri,
                     xmem_error_str(&err));
        return t;
}

Test(copy_remote, region_a_to_b)
{
        struct xmem_transport *ta = open_uri(pa.tcp_uri), *tb = open_uri(pb.tcp_uri);
        struct xmem_region_ref src, dst, bad;
        static uint8_t w[SIZE], r[SIZE];

        cr_assert(xmem_transport_hello(ta)->features & XMEM_FEAT_REMOTE_COPY);
        cr_assert_eq(xmem_region_alloc(ta, SIZE, &src, NULL), 0);
        cr_assert_eq(xmem_region_alloc(tb, SIZE, &dst, NULL), 0);
        harness_pattern(w, SIZE, 77, 0);
        cr_assert_eq(xmem_write(ta, &src, 0, w, SIZE), 0);

        cr_assert_eq(xmem_region_copy(ta, &src, 0, pb.tcp_uri, &dst, 0, SIZE), 0);
        cr_assert_eq(xmem_read(tb, &dst, 0, r, SIZE), 0);
        cr_assert(!memcmp(w, r, SIZE), "B does not hold A's data");

        /* unaligned piece to another offset */
        memset(r, 0, SIZE);
        cr_assert_eq(xmem_region_copy(ta, &src, 4321, pb.tcp_uri, &dst, 100, 654321), 0);
        cr_assert_eq(xmem_read(tb, &dst, 100, r, 654321), 0);
        cr_assert(!memcmp(w + 4321, r, 654321), "unaligned remote copy differs");

        /* a wrong destination key is refused by B, reported through A */
        bad = dst;
        bad.key[3] ^= 8;
        cr_assert_lt(xmem_region_copy(ta, &src, 0, pb.tcp_uri, &bad, 0, 4096), 0);
        /* an unreachable destination fails, it does not hang */
        cr_assert_lt(xmem_region_copy(ta, &src, 0, "tcp://127.0.0.1:1", &dst, 0, 4096), 0);
        xmem_transport_close(ta);
        xmem_transport_close(tb);
}

/* The client sends only the COPY: during the copy it holds no connection to B
 * at all (B's region was made beforehand, that transport closed), so the data
 * can only have gone from A to B directly. */
Test(copy_remote, data_bypasses_client)
{
        struct xmem_transport *ta, *tb = open_uri(pb.tcp_uri);
        struct xmem_region_ref src, dst;
        static uint8_t w[SIZE], r[SIZE];

        cr_assert_eq(xmem_region_alloc(tb, SIZE, &dst, NULL), 0);
        xmem_transport_close(tb);

        ta = open_uri(pa.tcp_uri);
        cr_assert_eq(xmem_region_alloc(ta, SIZE, &src, NULL), 0);
        harness_pattern(w, SIZE, 5, 0);
        cr_assert_eq(xmem_write(ta, &src, 0, w, SIZE), 0);
        cr_assert_eq(xmem_region_copy(ta, &src, 0, pb.tcp_uri, &dst, 0, SIZE), 0);
        xmem_transport_close(ta);

        tb = open_uri(pb.tcp_uri);
        cr_assert_eq(xmem_read(tb, &dst, 0, r, SIZE), 0);
        cr_assert(!memcmp(w, r, SIZE), "B does not hold A's data");
        xmem_transport_close(tb);
}

static uint64_t connections_total(struct xmem_transport *t)
{
        char *json;
        uint64_t n;

        cr_assert_eq(xmem_stats(t, NULL, &json), 0);
        n = harness_json_u64(json, "connections_total");
        free(json);
        return n;
}

/* A only copies to its --peers: B's unix address and a third appliance C are
 * not among them. Refused with -EPERM before A dials anything: C never sees
 * a connection. The listed address still works afterwards. */
Test(copy_remote, unlisted_destination_is_refused)
{
        static const char *const args[] = { "--pool-size", "64M", NULL };
        struct harness_proc pc;
        struct xmem_transport *ta = open_uri(pa.tcp_uri), *tc;
        struct xmem_region_ref src, dst;
        uint8_t w[8192], r[8192];
        uint64_t before;

        harness_init(&pc);
        harness_appliance_start(&pc, args);
        tc = open_uri(pc.unix_uri);
        cr_assert_eq(xmem_region_alloc(ta, 1 << 20, &src, NULL), 0);
        cr_assert_eq(xmem_region_alloc(tc, 1 << 20, &dst, NULL), 0);
        harness_pattern(w, sizeof(w), 8, 0);
        cr_assert_eq(xmem_write(ta, &src, 0, w, sizeof(w)), 0);
        before = connections_total(tc);
        cr_assert_eq(xmem_region_copy(ta, &src, 0, pc.tcp_uri, &dst, 0, sizeof(w)), -EPERM);
        cr_assert_eq(xmem_region_copy(ta, &src, 0, pc.unix_uri, &dst, 0, sizeof(w)), -EPERM);
        cr_assert_eq(xmem_region_copy(ta, &src, 0, pb.unix_uri, &dst, 0, sizeof(w)), -EPERM);
        cr_assert_eq(connections_total(tc), before, "A dialled C");
        cr_assert_eq(xmem_read(tc, &dst, 0, r, sizeof(r)), 0);
        for (size_t i = 0; i < sizeof(r); i++)
                cr_assert_eq(r[i], 0, "C's region changed");
        xmem_transport_close(tc);
        harness_cleanup(&pc);

        {
                struct xmem_transport *tb = open_uri(pb.tcp_uri);
                cr_assert_eq(xmem_region_alloc(tb, 1 << 20, &dst, NULL), 0);
                cr_assert_eq(xmem_region_copy(ta, &src, 0, pb.tcp_uri, &dst, 0, sizeof(w)), 0);
                cr_assert_eq(xmem_read(tb, &dst, 0, r, sizeof(r)), 0);
                cr_assert_arr_eq(w, r, sizeof(w));
                xmem_transport_close(tb);
        }
        xmem_transport_close(ta);
}

/* With --secret-file on both, A's outgoing connection to its tcp peer proves
 * the same secret; a peer of another deployment refuses A. */
Test(copy_remote, copy_to_peer_authenticates_with_the_secret)
{
        struct harness_proc pc, pd;
        char secret[160], other[160];
        struct xmem_transport_opts opts = { .secret_file = secret };
        struct xmem_transport *tc = NULL, *td = NULL;
        struct xmem_error err = {};
        struct xmem_region_ref src, dst;
        uint8_t w[65536], r[65536];
        int fd;

        harness_init(&pc);
        harness_init(&pd);
        snprintf(secret, sizeof(secret), "%s/secret", pc.dir);
        snprintf(other, sizeof(other), "%s/other", pc.dir);
        fd = open(secret, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        cr_assert(fd >= 0 && write(fd, "a secret of this deployment", 27) == 27);
        close(fd);
        fd = open(other, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        cr_assert(fd >= 0 && write(fd, "a secret of another deployment", 30) == 30);
        close(fd);
        harness_plan(&pd);
        {
                const char *c_args[] = { "--pool-size", "64M", "--secret-file", secret,
                                         "--peer", pd.tcp_uri, NULL };
                const char *d_args[] = { "--pool-size", "64M", "--secret-file", secret, NULL };
                harness_appliance_start(&pc, c_args);
                harness_appliance_start(&pd, d_args);
        }
        cr_assert_eq(xmem_transport_open(pc.tcp_uri, &opts, &tc, &err), 0, "%s",
                     xmem_error_str(&err));
        cr_assert_eq(xmem_transport_open(pd.tcp_uri, &opts, &td, &err), 0, "%s",
                     xmem_error_str(&err));
        cr_assert_eq(xmem_region_alloc(tc, 1 << 20, &src, NULL), 0);
        cr_assert_eq(xmem_region_alloc(td, 1 << 20, &dst, NULL), 0);
        harness_pattern(w, sizeof(w), 9, 0);
        cr_assert_eq(xmem_write(tc, &src, 0, w, sizeof(w)), 0);
        cr_assert_eq(xmem_region_copy(tc, &src, 0, pd.tcp_uri, &dst, 0, sizeof(w)), 0);
        cr_assert_eq(xmem_read(td, &dst, 0, r, sizeof(r)), 0);
        cr_assert_arr_eq(w, r, sizeof(w));
        xmem_transport_close(td);

        /* D of another deployment: C cannot prove D's secret, the copy fails */
        harness_stop(&pd);
        {
                const char *d_args[] = { "--pool-size", "64M", "--secret-file", other, NULL };
                harness_appliance_start(&pd, d_args);
        }
        cr_assert_eq(xmem_region_copy(tc, &src, 0, pd.tcp_uri, &dst, 0, sizeof(w)), -EACCES);
        xmem_transport_close(tc);
        harness_cleanup(&pc);
        harness_cleanup(&pd);
}
