/* test_conffile.c: configuration files as getopt_long arguments. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conffile.h"

static const struct option opts[] = {
    {"socket", required_argument, NULL, 's'},
    {"appliance", required_argument, NULL, 'a'},
    {"no-seccomp", no_argument, NULL, 'S'},
    {"stop-embedded", no_argument, NULL, 'X'},
    {"verbose", optional_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    CONFFILE_OPTIONS,
    {},
};
static const char *const not_in_file[] = {"stop-embedded", NULL};

static int parse(const char *text, struct conffile *c, struct xmem_error *err)
{
        return conffile_parse(text, strlen(text), "t.conf", opts, not_in_file, c, err);
}

Test(conffile, lines_become_arguments)
{
        struct conffile c = {};
        struct xmem_error err = {};

        cr_assert_eq(parse("# memd\n\n  socket =  /run/x.sock  \r\n"
                           "appliance=tcp://h:1\n\tappliance = unix:///a b\n"
                           "no-seccomp\nverbose\nverbose = 2\n# end",
                           &c, &err),
                     0, "%s", err.msg);
        cr_assert_eq(c.n, 6);
        cr_assert_str_eq(c.args[0], "--socket=/run/x.sock");
        cr_assert_str_eq(c.where[0], "t.conf:3");
        cr_assert_str_eq(c.args[1], "--appliance=tcp://h:1");
        cr_assert_str_eq(c.args[2], "--appliance=unix:///a b");
        cr_assert_str_eq(c.where[2], "t.conf:5");
        cr_assert_str_eq(c.args[3], "--no-seccomp");
        cr_assert_str_eq(c.args[4], "--verbose");
        cr_assert_str_eq(c.args[5], "--verbose=2");
        conffile_done(&c);
        cr_assert_eq(c.n, 0);
}

Test(conffile, flags_take_booleans)
{
        struct conffile c = {};
        struct xmem_error err = {};

        cr_assert_eq(parse("no-seccomp = yes\nno-seccomp = off\nno-seccomp=true\n", &c, &err), 0);
        cr_assert_eq(c.n, 2);
        cr_assert_str_eq(c.where[1], "t.conf:3");
        conffile_done(&c);
        cr_assert_eq(parse("no-seccomp = maybe\n", &c, &err), -EINVAL);
        cr_assert_str_eq(err.msg, "t.conf:1: no-seccomp: 'maybe' is not yes or no");
        cr_assert_eq(c.n, 0);
}

Test(conffile, bad_lines_are_refused_with_their_line)
{
        static const struct {
                const char *text, *msg;
        } bad[] = {
            {"socket = /a\nsockets = /b\n", "t.conf:2: unknown key 'sockets'"},
            {"--socket = /a\n", "t.conf:1: unknown key '--socket'"},
            {"\n\nsocket\n", "t.conf:3: socket needs a value (socket = VALUE)"},
            {"socket =   \n", "t.conf:1: socket needs a value (socket = VALUE)"},
            {"= /a\n", "t.conf:1: a line is KEY = VALUE, the key is missing"},
            {"help\n", "t.conf:1: 'help' is a command-line option only"},
            {"config = /etc/other\n", "t.conf:1: 'config' is a command-line option only"},
            {"no-config\n", "t.conf:1: 'no-config' is a command-line option only"},
            {"stop-embedded = yes\n", "t.conf:1: 'stop-embedded' is a command-line option only"},
            {"SOCKET = /a\n", "t.conf:1: unknown key 'SOCKET'"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct conffile c = {.n = 99};
                struct xmem_error err = {};

                cr_assert_eq(parse(bad[i].text, &c, &err), -EINVAL, "'%s' accepted", bad[i].text);
                cr_assert_str_eq(err.msg, bad[i].msg);
                cr_assert_eq(c.n, 99, "changed the output on failure");
        }
}

Test(conffile, nul_byte_refused)
{
        struct conffile c = {};
        struct xmem_error err = {};

        cr_assert_eq(conffile_parse("socket = /a\0b\n", 14, "t.conf", opts, NULL, &c, &err),
                     -EINVAL);
        cr_assert_str_eq(err.msg, "t.conf:1: contains a NUL byte");
}

static char tmpdir[] = "/tmp/pk-conffile-XXXXXX";

static void setup(void)
{
        cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
        cr_assert_eq(system(cmd), 0);
}

static char *write_conf(const char *name, const char *text)
{
        char *path;
        FILE *f;

        cr_assert_gt(asprintf(&path, "%s/%s", tmpdir, name), 0);
        f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
        return path;
}

/* The daemon's own getopt_long loop over the built arguments. */
static void getopt_all(struct conffile_argv *a, char *got, size_t len)
{
        int c;

        got[0] = 0;
        optind = 0;
        while ((c = getopt_long(a->argc, a->argv, "", opts, NULL)) >= 0) {
                if (c == CONFFILE_OPT_CONFIG || c == CONFFILE_OPT_NO_CONFIG)
                        continue;
                snprintf(got + strlen(got), len - strlen(got), "%c:%s:%s ", c, optarg ?: "",
                         conffile_argv_where(a, a->argv[optind - 1]) ? "file" : "cli");
        }
}

TestSuite(conffile_argv, .init = setup, .fini = teardown);

Test(conffile_argv, command_line_overrides_each_option_of_the_file)
{
        char *path = write_conf("m.conf", "socket = /f.sock\nappliance = tcp://a:1\n"
                                          "appliance = tcp://b:2\nno-seccomp\n");
        char *argv[] = {"memd", "--config", path, "--appl", "tcp://c:3", NULL};
        struct conffile_argv a = {};
        struct xmem_error err = {};
        char got[512];

        cr_assert_eq(conffile_argv_build(5, argv, NULL, opts, not_in_file, &a, &err), 0, "%s",
                     err.msg);
        cr_assert_str_eq(a.path, path);
        getopt_all(&a, got, sizeof(got));
        /* both file appliances replaced by the command line's (abbreviated) one */
        cr_assert_str_eq(got, "s:/f.sock:file S::file a:tcp://c:3:cli ");
        conffile_argv_done(&a);
        free(path);
}

Test(conffile_argv, default_file_only_when_it_exists)
{
        char *path = write_conf("d.conf", "socket = /d.sock\n");
        char *missing = NULL;
        char *argv[] = {"memd", "--socket=/c.sock", NULL};
        char *argv_none[] = {"memd", "--no-config", NULL};
        struct conffile_argv a = {};
        struct xmem_error err = {};
        char got[512];

        cr_assert_eq(conffile_argv_build(1, argv, path, opts, NULL, &a, &err), 0);
        getopt_all(&a, got, sizeof(got));
        cr_assert_str_eq(got, "s:/d.sock:file ");
        conffile_argv_done(&a);

        cr_assert_eq(conffile_argv_build(2, argv, path, opts, NULL, &a, &err), 0);
        getopt_all(&a, got, sizeof(got));
        cr_assert_str_eq(got, "s:/c.sock:cli ");
        conffile_argv_done(&a);

        cr_assert_eq(conffile_argv_build(2, argv_none, path, opts, NULL, &a, &err), 0);
        cr_assert_null(a.path);
        cr_assert_eq(a.argc, 2);
        conffile_argv_done(&a);

        cr_assert_gt(asprintf(&missing, "%s/none.conf", tmpdir), 0);
        cr_assert_eq(conffile_argv_build(1, argv, missing, opts, NULL, &a, &err), 0);
        cr_assert_null(a.path);
        cr_assert_eq(a.argc, 1);
        conffile_argv_done(&a);
        free(missing);
        free(path);
}

Test(conffile_argv, explicit_file_must_exist_and_parse)
{
        char *bad = write_conf("bad.conf", "socket = /a\nnope = 1\n");
        char *argv[] = {"memd", "--config", "/nonexistent/pk.conf", NULL};
        char *argv_bad[] = {"memd", "--config", bad, NULL};
        struct conffile_argv a = {};
        struct xmem_error err = {};
        char want[256];

        cr_assert_eq(conffile_argv_build(3, argv, NULL, opts, NULL, &a, &err), -ENOENT);
        cr_assert_str_eq(err.msg, "configuration /nonexistent/pk.conf: No such file or directory");
        cr_assert_eq(conffile_argv_build(3, argv_bad, NULL, opts, NULL, &a, &err), -EINVAL);
        snprintf(want, sizeof(want), "%s:2: unknown key 'nope'", bad);
        cr_assert_str_eq(err.msg, want);
        cr_assert_null(a.argv);
        free(bad);
}
