/* conffile.c: a configuration file's "KEY = VALUE" lines turned into
 * "--KEY=VALUE" arguments for the daemon's own getopt_long table. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conffile.h"
#include "fdio.h"

static const char *const never_in_file[] = {"help", "version", "config", "no-config", NULL};

static bool in_list(const char *const *list, const char *s)
{
        for (; list && *list; list++)
                if (strcmp(*list, s) == 0)
                        return true;
        return false;
}

static const struct option *find_option(const struct option *opts, const char *key)
{
        for (; opts->name; opts++)
                if (strcmp(opts->name, key) == 0)
                        return opts;
        return NULL;
}

static bool is_blank(char c)
{
        return c == ' ' || c == '\t' || c == '\r';
}

/* Trims blanks at both ends of [*s, *s+*len). */
static void trim(const char **s, size_t *len)
{
        while (*len && is_blank(**s))
                (*s)++, (*len)--;
        while (*len && is_blank((*s)[*len - 1]))
                (*len)--;
}

/* 1: the flag is set, 0: it is left out, -EINVAL: not a boolean. */
static int parse_flag(const char *v, size_t len)
{
        static const char *const yes[] = {"yes", "true", "1", "on", NULL};
        static const char *const no[] = {"no", "false", "0", "off", NULL};
        char buf[8];

        if (len == 0)
                return 1;
        if (len >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, v, len);
        buf[len] = 0;
        return in_list(yes, buf) ? 1 : in_list(no, buf) ? 0 : -EINVAL;
}

static int append(struct conffile *c, const char *name, unsigned line, const char *key,
                  const char *value, size_t vlen)
{
        char **args = realloc(c->args, (c->n + 1) * sizeof(char *));
        char **where;
        int r;

        if (!args)
                return -ENOMEM;
        c->args = args;
        where = realloc(c->where, (c->n + 1) * sizeof(char *));
        if (!where)
                return -ENOMEM;
        c->where = where;
        if (value)
                r = asprintf(&args[c->n], "--%s=%.*s", key, (int)vlen, value);
        else
                r = asprintf(&args[c->n], "--%s", key);
        if (r < 0)
                return -ENOMEM;
        if (asprintf(&where[c->n], "%s:%u", name, line) < 0) {
                free(args[c->n]);
                return -ENOMEM;
        }
        c->n++;
        return 0;
}

/* One line, without its newline. */
static int parse_line(struct conffile *c, const char *s, size_t len, const char *name,
                      unsigned line, const struct option *opts, const char *const *not_in_file,
                      struct xmem_error *err)
{
        const char *eq, *value = NULL;
        const struct option *o;
        size_t klen, vlen = 0;
        char key[64];
        int flag;

        trim(&s, &len);
        if (len == 0 || s[0] == '#')
                return 0;
        if (memchr(s, 0, len))
                return xmem_error_set(err, -EINVAL, "%s:%u: contains a NUL byte", name, line);
        eq = memchr(s, '=', len);
        klen = eq ? (size_t)(eq - s) : len;
        if (eq) {
                value = eq + 1;
                vlen = len - klen - 1;
                trim(&value, &vlen);
        }
        trim(&s, &klen);
        if (klen == 0)
                return xmem_error_set(
                    err, -EINVAL, "%s:%u: a line is KEY = VALUE, the key is missing", name, line);
        if (klen >= sizeof(key))
                return xmem_error_set(err, -EINVAL, "%s:%u: unknown key '%.40s...'", name, line, s);
        memcpy(key, s, klen);
        key[klen] = 0;
        o = find_option(opts, key);
        if (!o)
                return xmem_error_set(err, -EINVAL, "%s:%u: unknown key '%s'", name, line, key);
        if (in_list(never_in_file, key) || in_list(not_in_file, key))
                return xmem_error_set(err, -EINVAL, "%s:%u: '%s' is a command-line option only",
                                      name, line, key);
        switch (o->has_arg) {
        case no_argument:
                flag = parse_flag(value, vlen);
                if (flag < 0)
                        return xmem_error_set(err, -EINVAL, "%s:%u: %s: '%.*s' is not yes or no",
                                              name, line, key, (int)MIN(vlen, 64), value);
                return flag ? append(c, name, line, key, NULL, 0) : 0;
        case required_argument:
                if (vlen == 0)
                        return xmem_error_set(err, -EINVAL, "%s:%u: %s needs a value (%s = VALUE)",
                                              name, line, key, key);
                return append(c, name, line, key, value, vlen);
        default:
                return append(c, name, line, key, vlen ? value : NULL, vlen);
        }
}

int conffile_parse(const char *text, size_t len, const char *name, const struct option *opts,
                   const char *const *not_in_file, struct conffile *ret, struct xmem_error *err)
{
        struct conffile c = {};
        unsigned line = 0;
        int r = 0;

        while (len > 0 && r >= 0) {
                const char *nl = memchr(text, '\n', len);
                size_t l = nl ? (size_t)(nl - text) : len;

                r = parse_line(&c, text, l, name, ++line, opts, not_in_file, err);
                if (r == -ENOMEM)
                        xmem_error_set(err, r, "%s:%u: out of memory", name, line);
                text += nl ? l + 1 : l;
                len -= nl ? l + 1 : l;
        }
        if (r < 0) {
                conffile_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

void conffile_done(struct conffile *c)
{
        for (size_t i = 0; i < c->n; i++) {
                free(c->args[i]);
                free(c->where[i]);
        }
        free(c->args);
        free(c->where);
        *c = (struct conffile){};
}

static int read_file(const char *path, char **ret_text, size_t *ret_len, struct xmem_error *err)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        _cleanup_free_ char *text = NULL;
        struct stat st;
        ssize_t n;

        if (fd < 0 || fstat(fd, &st) < 0)
                return xmem_error_set(err, negative_errno(), "configuration %s: %m", path);
        /* /dev/null reads as an empty file */
        if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode))
                return xmem_error_set(err, -EINVAL, "configuration %s: not a regular file", path);
        text = malloc(CONFFILE_MAX_SIZE + 1);
        if (!text)
                return xmem_error_set(err, -ENOMEM, "configuration %s: out of memory", path);
        n = read_upto(fd, text, CONFFILE_MAX_SIZE + 1);
        if (n < 0)
                return xmem_error_set(err, (int)n, "configuration %s: %s", path, strerror((int)-n));
        if (n > CONFFILE_MAX_SIZE)
                return xmem_error_set(err, -EFBIG, "configuration %s: larger than 1M", path);
        *ret_text = TAKE_PTR(text);
        *ret_len = (size_t)n;
        return 0;
}

/* Which options the command line gives (by index in OPTS), and --config's
 * file. getopt_long itself reads it, so abbreviations and "--opt VALUE"
 * count as they will in the daemon's loop. */
static int scan_command_line(int argc, char **argv, const struct option *opts, bool *given,
                             const char **ret_config, bool *ret_no_config)
{
        _cleanup_free_ char **copy = calloc((size_t)argc + 1, sizeof(char *));
        int saved_opterr = opterr, idx, c;

        if (!copy)
                return -ENOMEM;
        memcpy(copy, argv, (size_t)argc * sizeof(char *));
        opterr = 0;
        optind = 0;
        idx = -1;
        while ((c = getopt_long(argc, copy, "", opts, &idx)) >= 0) {
                if (idx >= 0)
                        given[idx] = true;
                if (c == CONFFILE_OPT_CONFIG)
                        *ret_config = optarg;
                else if (c == CONFFILE_OPT_NO_CONFIG)
                        *ret_no_config = true;
                idx = -1;
        }
        opterr = saved_opterr;
        optind = 0; /* the daemon's own loop starts afresh */
        return 0;
}

static const char *option_name(const char *arg)
{
        return arg + 2; /* "--KEY[=VALUE]": compared up to '=' */
}

static bool same_key(const char *arg, const char *name)
{
        size_t n = strlen(name);
        const char *k = option_name(arg);

        return strncmp(k, name, n) == 0 && (k[n] == 0 || k[n] == '=');
}

int conffile_argv_build(int argc, char **argv, const char *default_path, const struct option *opts,
                        const char *const *not_in_file, struct conffile_argv *ret,
                        struct xmem_error *err)
{
        struct conffile_argv a = {};
        _cleanup_free_ bool *given = NULL;
        _cleanup_free_ char *text = NULL;
        const char *config = NULL;
        bool no_config = false;
        size_t nopts = 0, len = 0;
        int r, n = 1;

        while (opts[nopts].name)
                nopts++;
        given = calloc(nopts + 1, sizeof(bool));
        if (!given || scan_command_line(argc, argv, opts, given, &config, &no_config) < 0)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        if (!no_config && !config && default_path && access(default_path, F_OK) == 0)
                config = default_path;
        if (!no_config && config) {
                r = read_file(config, &text, &len, err);
                if (r < 0)
                        return r;
                r = conffile_parse(text, len, config, opts, not_in_file, &a.file, err);
                if (r < 0)
                        return r;
                a.path = config;
        }
        a.argv = calloc(a.file.n + (size_t)argc + 1, sizeof(char *));
        if (!a.argv) {
                conffile_done(&a.file);
                return xmem_error_set(err, -ENOMEM, "out of memory");
        }
        a.argv[0] = argc > 0 ? argv[0] : (char *)"";
        for (size_t i = 0; i < a.file.n; i++) {
                bool overridden = false;

                for (size_t o = 0; o < nopts && !overridden; o++)
                        overridden = given[o] && same_key(a.file.args[i], opts[o].name);
                if (!overridden)
                        a.argv[n++] = a.file.args[i];
        }
        for (int i = 1; i < argc; i++)
                a.argv[n++] = argv[i];
        a.argc = n;
        *ret = a;
        return 0;
}

const char *conffile_argv_where(const struct conffile_argv *a, const char *arg)
{
        for (size_t i = 0; a && arg && i < a->file.n; i++)
                if (a->file.args[i] == arg)
                        return a->file.where[i];
        return NULL;
}

void conffile_argv_done(struct conffile_argv *a)
{
        conffile_done(&a->file);
        free(a->argv);
        *a = (struct conffile_argv){};
}
