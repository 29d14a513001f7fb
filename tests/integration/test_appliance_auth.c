/* test_appliance_auth.c: the appliance lets in only its clients: tcp clients
 * that prove the deployment's secret (no secret, a wrong one, a replayed
 * handshake are refused before any region op), unix clients of an allowed
 * uid (another uid is refused), SHM_ATTACH only on unix. Real appliances,
 * real sockets. */
#include <criterion/criterion.h>
#include <grp.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "authwire.h"
#include "harness.h"
#include "transport/transport.h"

#define SECRET "correct horse battery staple 42"
#define OTHER_SECRET "another deployment's secret 99"

static struct harness_proc app;
static char secret_path[128], other_path[128];

static void setup(void)
{
        harness_init(&app);
        snprintf(secret_path, sizeof(secret_path), "%s/secret", app.dir);
        snprintf(other_path, sizeof(other_path), "%s/other-secret", app.dir);
        auth_write_secret(secret_path, SECRET "\n", 0600);
        auth_write_secret(other_path, OTHER_SECRET, 0400);
}

static void teardown(void)
{
        harness_cleanup(&app);
}

TestSuite(appliance_auth, .init = setup, .fini = teardown, .timeout = 60);

static void start_with_secret(void)
{
        const char *args[] = {"--pool-size", "64M", "--secret-file", secret_path, NULL};
        harness_appliance_start(&app, args);
}

static bool log_has(const char *needle)
{
        char buf[65536] = "";
        int fd = open(app.log_path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

        if (fd >= 0)
                close(fd);
        buf[n > 0 ? n : 0] = 0;
        return strstr(buf, needle) != NULL;
}

/* A good client still gets served. */
static void good_client(const char *uri, const char *secret_file)
{
        struct xmem_transport_opts opts = {.secret_file = secret_file};

        harness_good_client(uri, &opts);
}

/* OP as the first request of a fresh tcp connection: refused, then closed. */
static void refused_first(uint16_t op, int want)
{
        int fd = harness_connect_tcp(&app);
        struct xmem_wire_hdr req = raw_hdr(op, 5), rep;

        cr_assert_geq(fd, 0);
        req.arg = op == XMEM_OP_ALLOC ? 1 << 20 : 0;
        cr_assert_eq(raw_call(fd, &req, NULL, &rep, NULL, 0), want, "%s", wire_op_name(op));
        cr_assert(raw_closed(fd, 2000), "%s: connection left open", wire_op_name(op));
        close(fd);
}

Test(appliance_auth, tcp_client_without_secret_is_refused)
{
        struct xmem_transport *t = NULL;
        struct xmem_error err = {};
        char *json;

        start_with_secret();
        refused_first(XMEM_OP_HELLO, -EACCES);
        refused_first(XMEM_OP_ALLOC, -EACCES);
        refused_first(XMEM_OP_STATS, -EACCES);
        cr_assert(log_has("alloc before authentication, refused, closing"));
        cr_assert_eq(xmem_transport_open(app.tcp_uri, NULL, &t, &err), -EACCES, "%s",
                     xmem_error_str(&err));
        good_client(app.tcp_uri, secret_path);
        /* nothing was made by the refused clients: only the good one's region came and went */
        cr_assert_eq(xmem_transport_open(app.unix_uri, NULL, &t, &err), 0, "%s",
                     xmem_error_str(&err));
        cr_assert_eq(xmem_stats(t, NULL, &json), 0);
        cr_assert_eq(harness_json_u64(json, "regions"), 0, "%s", json);
        cr_assert_geq(harness_json_u64(json, "refused"), 4, "%s", json);
        free(json);
        xmem_transport_close(t);
}

Test(appliance_auth, wrong_secret_is_refused)
{
        struct xmem_transport_opts opts = {.secret_file = other_path};
        struct xmem_secret wrong = auth_secret_of(OTHER_SECRET);
        uint8_t prove[XMEM_AUTH_NONCE_SIZE + XMEM_AUTH_MAC_SIZE];
        struct xmem_transport *t = NULL;
        struct xmem_error err = {};
        int fd;

        start_with_secret();
        cr_assert_eq(xmem_transport_open(app.tcp_uri, &opts, &t, &err), -EACCES);
        cr_assert(strstr(xmem_error_str(&err), "wrong secret"), "%s", xmem_error_str(&err));
        fd = harness_connect_tcp(&app);
        cr_assert_eq(auth_handshake(fd, &wrong, prove), -EACCES);
        cr_assert(raw_closed(fd, 2000));
        close(fd);
        cr_assert(log_has("authentication failed (wrong secret or replayed proof), closing"));
        good_client(app.tcp_uri, secret_path);
}

Test(appliance_auth, replayed_handshake_is_refused)
{
        struct xmem_secret s = auth_secret_of(SECRET);
        uint8_t prove[XMEM_AUTH_NONCE_SIZE + XMEM_AUTH_MAC_SIZE], theirs[XMEM_AUTH_MAC_SIZE];
        uint8_t sn1[XMEM_AUTH_NONCE_SIZE], sn2[XMEM_AUTH_NONCE_SIZE];
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_AUTH, 9), rep;
        int fd1, fd2;
        uint64_t id;
        uint8_t key[XMEM_KEY_SIZE];

        start_with_secret();
        fd1 = harness_connect_tcp(&app);
        cr_assert_eq(auth_handshake(fd1, &s, prove), 0, "a right proof is accepted");
        raw_alloc(fd1, 1 << 20, &id, key); /* and the connection serves */

        /* an eavesdropper replays the recorded proof on a connection of its own */
        fd2 = harness_connect_tcp(&app);
        auth_challenge(fd2, sn2);
        cr_assert_eq(auth_prove(fd2, prove, theirs), -EACCES);
        cr_assert(raw_closed(fd2, 2000));
        close(fd2);
        /* replaying without asking for a challenge is out of order */
        fd2 = harness_connect_tcp(&app);
        cr_assert_eq(auth_prove(fd2, prove, theirs), -EPROTO);
        cr_assert(raw_closed(fd2, 2000));
        close(fd2);
        /* and one connection gets one challenge: no asking for nonces until one fits */
        fd2 = harness_connect_tcp(&app);
        auth_challenge(fd2, sn1);
        cr_assert(memcmp(sn1, sn2, sizeof(sn1)) != 0, "nonces repeat");
        req.arg = XMEM_AUTH_CHALLENGE;
        cr_assert_eq(raw_call(fd2, &req, NULL, &rep, NULL, 0), -EPROTO);
        cr_assert(raw_closed(fd2, 2000));
        close(fd2);
        cr_assert_eq(raw_op(fd1, XMEM_OP_FREE, id, key, 0, &rep), 0);
        close(fd1);
}

/* Run the appliance with ARGS (no listener needed to fail); its exit status
 * and first stderr line. */
static int run_appliance(const char *const *args, char *line, size_t len)
{
        const char *argv[16] = {getenv("XMEM_APPLIANCE")};
        struct harness_child c;
        int st, n = 1;

        for (; *args && n < 15; args++)
                argv[n++] = *args;
        harness_child_spawn(&c, argv, NULL, NULL, true);
        harness_child_line(&c, line, len, 5000);
        st = harness_child_wait(&c, 5000);
        harness_child_kill(&c);
        return st;
}

Test(appliance_auth, bad_secret_file_stops_start_up)
{
        char listen[160], path[160], line[512];
        const struct {
                const char *content;
                mode_t mode;
                const char *says;
        } cases[] = {
            {NULL, 0, "No such file"},
            {"", 0600, "empty"},
            {"\n", 0600, "empty"},
            {SECRET, 0644, "must be 0600 or 0400"},
            {SECRET, 0640, "must be 0600 or 0400"},
            {"short", 0600, "at least 16"},
        };

        snprintf(listen, sizeof(listen), "unix://%s/never.sock", app.dir);
        snprintf(path, sizeof(path), "%s/bad-secret", app.dir);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *args[] = {"--listen", listen, "--secret-file", path, NULL};
                int st;

                unlink(path);
                if (cases[i].content)
                        auth_write_secret(path, cases[i].content, cases[i].mode);
                st = run_appliance(args, line, sizeof(line));
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "case %zu: status 0x%x", i, st);
                cr_assert(strstr(line, "--secret-file") && strstr(line, cases[i].says),
                          "case %zu: %s", i, line);
        }
        cr_assert_neq(access(listen + strlen("unix://"), F_OK), 0, "it listened anyway");
}

/* In a child as uid 65534: first request over the unix socket. Exit 0 when
 * the reply status is WANT (and, if refused, the connection is closed then). */
static int other_uid_client(const char *sock, int want)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_HELLO, 1), rep;
        uint8_t buf[XMEM_WIRE_HDR_SIZE];
        int fd;

        if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                return 10;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return 11; /* the socket itself was out of reach: not what is tested */
        if (raw_send(fd, &req, NULL) < 0 || read_full(fd, buf, XMEM_WIRE_HDR_SIZE) < 0 ||
            wire_hdr_decode(buf, true, &rep, NULL) < 0)
                return 12;
        if (rep.status != want)
                return 13;
        if (want < 0 && !raw_closed(fd, 2000))
                return 14;
        return 0;
}

static void run_other_uid(int want)
{
        char sock[160];
        int st;
        pid_t pid;

        snprintf(sock, sizeof(sock), "%s/appliance.sock", app.dir);
        /* the directory and socket let anyone connect: only the uid check can refuse */
        cr_assert_eq(chmod(app.dir, 0755), 0);
        cr_assert_eq(chmod(sock, 0666), 0);
        pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
                _exit(other_uid_client(sock, want));
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "uid 65534 client: exit %d (want %d)",
                  WEXITSTATUS(st), want);
}

Test(appliance_auth, unix_client_of_another_uid_is_refused)
{
        const char *args[] = {"--pool-size", "64M", NULL};
        const char *allow[] = {"--pool-size", "64M", "--allow-uid", "65534",
                               "--allow-uid", "0",   NULL};

        if (!harness_is_root())
                cr_skip_test("needs root to become uid 65534");
        harness_appliance_start(&app, args);
        run_other_uid(-EACCES);
        cr_assert(log_has("refused: uid 65534 is not allowed (--allow-uid)"));
        good_client(app.unix_uri, NULL); /* root: the appliance's own uid, the default */
        good_client(app.shm_uri, NULL);
        harness_stop(&app);
        /* the same client is served once its uid is allowed: the socket was reachable */
        harness_appliance_start(&app, allow);
        run_other_uid(0);
        good_client(app.unix_uri, NULL);
}

Test(appliance_auth, shm_attach_only_on_unix)
{
        struct xmem_secret s = auth_secret_of(SECRET);
        uint8_t prove[XMEM_AUTH_NONCE_SIZE + XMEM_AUTH_MAC_SIZE];
        struct xmem_wire_hdr req = raw_hdr(XMEM_OP_SHM_ATTACH, 3), rep;
        int fd;

        start_with_secret();
        refused_first(XMEM_OP_SHM_ATTACH, -EACCES); /* before authentication */
        fd = harness_connect_tcp(&app);
        cr_assert_eq(auth_handshake(fd, &s, prove), 0);
        cr_assert_eq(raw_call(fd, &req, NULL, &rep, NULL, 0), -EOPNOTSUPP,
                     "SHM_ATTACH over authenticated tcp");
        req = raw_hdr(XMEM_OP_HELLO, 4);
        cr_assert_eq(raw_call(fd, &req, NULL, &rep, NULL, 0), 0, "the connection still serves");
        close(fd);
        good_client(app.shm_uri, NULL);
}

Test(appliance_auth, unauthenticated_tcp_is_the_default_and_says_so)
{
        const char *args[] = {"--pool-size", "64M", "--listen", NULL, NULL};
        char any[64];
        struct harness_proc probe;

        harness_init(&probe);
        harness_plan(&probe); /* a free port for a second, non-loopback listener */
        snprintf(any, sizeof(any), "tcp://0.0.0.0:%u", probe.port);
        harness_cleanup(&probe);
        args[3] = any;
        harness_appliance_start(&app, args);
        good_client(app.tcp_uri, NULL);
        /* warned about the listener others reach, not about the loopback one */
        snprintf(any, sizeof(any), "tcp://0.0.0.0:%u: no --secret-file", probe.port);
        cr_assert(log_has(any), "no warning for the 0.0.0.0 listener");
        snprintf(any, sizeof(any), "%s: no --secret-file", app.tcp_uri);
        cr_assert(!log_has(any), "a loopback listener was warned about");
}
