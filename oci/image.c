/* image.c: whether libxmem-shim.so can load in a container image. The shim is
 * an LD_PRELOAD library built for glibc >= 2.17: a musl image, an image of
 * static binaries, an older glibc or a foreign architecture cannot load it,
 * and the container would run without external memory or die with a loader
 * error. Every path is resolved inside the rootfs (open_in_root). */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elfread.h"
#include "fdio.h"
#include "image.h"
#include "macro.h"

#define GLIBC_LOADER "lib64/ld-linux-x86-64.so.2"
#define MUSL_LOADER "lib/ld-musl-x86_64.so.1"
#define HEAD_MAX (64 * 1024)        /* an entrypoint's headers and PT_INTERP */
#define LIBC_MAX (64 * 1024 * 1024) /* libc.so.6 is 2 MiB */
#define SCRIPT_DEPTH 4              /* #! interpreters followed */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static const char *const libc_dirs[] = {
    "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib",
};

/* REL opened for reading if it is a regular file: checked through an O_PATH
 * descriptor first, so a device node or FIFO an image plants is never opened. */
static int open_regular(int rootfd, const char *rel)
{
        _cleanup_close_ int path = open_in_root(rootfd, rel, O_PATH, 0);
        char proc[32];
        struct stat st;
        int fd;

        if (path < 0)
                return path;
        if (fstat(path, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EACCES;
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", path);
        fd = open(proc, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        return fd < 0 ? negative_errno() : fd;
}

static bool exists_in_root(int rootfd, const char *rel)
{
        _cleanup_close_ int fd = open_in_root(rootfd, rel, O_PATH, 0);
        struct stat st;

        return fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* The first up to LEN bytes of REL (a regular file in the rootfs), malloc'd. */
static int read_in_root(int rootfd, const char *rel, size_t len, char **ret, size_t *ret_len)
{
        _cleanup_close_ int fd = open_regular(rootfd, rel);
        _cleanup_free_ char *buf = NULL;
        ssize_t n;

        if (fd < 0)
                return fd;
        buf = malloc(len);
        if (!buf)
                return -ENOMEM;
        n = read_upto(fd, buf, len);
        if (n < 0)
                return (int)n;
        *ret = TAKE_PTR(buf);
        *ret_len = (size_t)n;
        return 0;
}

/* The newest GLIBC version of the image's libc.so.6 (0: none found). */
static int image_glibc(int rootfd, char *why, size_t why_len)
{
        for (size_t i = 0; i < ELEMENTSOF(libc_dirs); i++) {
                _cleanup_free_ char *buf = NULL;
                char rel[64];
                unsigned major, minor;
                size_t len;
                int r;

                snprintf(rel, sizeof(rel), "%s/libc.so.6", libc_dirs[i]);
                if (read_in_root(rootfd, rel, LIBC_MAX, &buf, &len) < 0)
                        continue;
                r = elf_glibc_version(buf, len, &major, &minor);
                if (r < 0) {
                        snprintf(why, why_len, "/%s is not glibc's libc", rel);
                        return 0;
                }
                if (major < IMAGE_GLIBC_MIN_MAJOR ||
                    (major == IMAGE_GLIBC_MIN_MAJOR && minor < IMAGE_GLIBC_MIN_MINOR)) {
                        snprintf(why, why_len, "the image's glibc %u.%u is older than %d.%d", major,
                                 minor, IMAGE_GLIBC_MIN_MAJOR, IMAGE_GLIBC_MIN_MINOR);
                        return 0;
                }
                return 1;
        }
        snprintf(why, why_len, "the image has glibc's loader but no libc.so.6");
        return 0;
}

/* What the image offers without looking at the entrypoint. */
static int image_loader(int rootfd, const char *entry, char *why, size_t why_len)
{
        if (exists_in_root(rootfd, GLIBC_LOADER))
                return image_glibc(rootfd, why, why_len);
        if (exists_in_root(rootfd, MUSL_LOADER))
                snprintf(why, why_len, "the image uses musl (/" MUSL_LOADER ")");
        else if (entry)
                snprintf(why, why_len,
                         "entrypoint %s is statically linked and the image has no glibc "
                         "loader (/" GLIBC_LOADER ")",
                         entry);
        else
                snprintf(why, why_len, "the image has no glibc loader (/" GLIBC_LOADER ")");
        return 0;
}

/* process.args[0] found in the rootfs (PATH from process.env when it has no
 * slash), as a path relative to the root; NULL when not found. */
static char *find_entry(int rootfd, const struct oci_config *c)
{
        const char *arg0 = c->args && json_object_array_length(c->args) > 0
                               ? json_object_get_string(json_object_array_get_idx(c->args, 0))
                               : NULL;
        _cleanup_free_ char *path = NULL;
        char *save = NULL, *p;

        if (!arg0 || !*arg0)
                return NULL;
        if (strchr(arg0, '/'))
                return strdup(arg0[0] == '/' ? arg0 + 1 : arg0);
        path = strdup(oci_config_getenv(c, "PATH") ?: DEFAULT_PATH);
        for (char *d = path ? strtok_r(path, ":", &save) : NULL; d;
             d = strtok_r(NULL, ":", &save)) {
                if (asprintf(&p, "%s/%s", d[0] == '/' ? d + 1 : d, arg0) < 0)
                        return NULL;
                if (exists_in_root(rootfd, p))
                        return p;
                free(p);
        }
        return NULL;
}

/* The verdict from the entrypoint REL (relative to the root), following #!. */
static int entry_check(int rootfd, char *rel, char *why, size_t why_len)
{
        char interp[256];

        for (int depth = 0; depth <= SCRIPT_DEPTH; depth++) {
                _cleanup_free_ char *buf = NULL;
                size_t len, n;
                int r;

                r = read_in_root(rootfd, rel, HEAD_MAX, &buf, &len);
                if (r < 0) /* the runtime reports an entrypoint it cannot run */
                        return image_loader(rootfd, NULL, why, why_len);
                if (len > 2 && buf[0] == '#' && buf[1] == '!') {
                        char *s = buf + 2 + strspn(buf + 2, " \t");
                        n = strcspn(s, " \t\n");
                        if (s + n >= buf + len || *s != '/' || n >= sizeof(interp))
                                return image_loader(rootfd, NULL, why, why_len);
                        memcpy(interp, s + 1, n - 1);
                        interp[n - 1] = 0;
                        snprintf(rel, PATH_MAX, "%s", interp);
                        continue;
                }
                r = elf_interp(buf, len, interp, sizeof(interp));
                if (r == -EXDEV) {
                        snprintf(why, why_len, "entrypoint /%s is not an x86-64 program", rel);
                        return 0;
                }
                if (r == 0) {
                        char entry[PATH_MAX + 1];
                        snprintf(entry, sizeof(entry), "/%s", rel);
                        return image_loader(rootfd, entry, why, why_len);
                }
                if (r < 0 || strcmp(interp, "/" GLIBC_LOADER) == 0)
                        return image_loader(rootfd, NULL, why, why_len);
                snprintf(why, why_len, "entrypoint /%s uses the loader %s%s", rel, interp,
                         strstr(interp, "ld-musl") ? " (musl)" : ", not glibc's");
                return 0;
        }
        return image_loader(rootfd, NULL, why, why_len);
}

int image_check(const char *rootfs, const struct oci_config *c, char *why, size_t why_len)
{
        _cleanup_close_ int rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
        _cleanup_free_ char *entry = NULL, *rel = NULL;

        if (rootfd < 0) {
                int r = negative_errno();
                snprintf(why, why_len, "rootfs %s: %s", rootfs, strerror(-r));
                return r;
        }
        entry = find_entry(rootfd, c);
        if (!entry)
                return image_loader(rootfd, NULL, why, why_len);
        rel = malloc(PATH_MAX);
        if (!rel) {
                snprintf(why, why_len, "out of memory");
                return -ENOMEM;
        }
        snprintf(rel, PATH_MAX, "%s", entry);
        return entry_check(rootfd, rel, why, why_len);
}

int image_gate(const char *rootfs, const struct oci_config *c, const struct xmem_annotations *x,
               char *notice, size_t notice_len, struct xmem_error *err)
{
        char why[512];
        int r = image_check(rootfs, c, why, sizeof(why));

        if (r < 0)
                return xmem_error_set(err, r, "%s", why);
        if (r > 0)
                return 1;
        if (x->required)
                return xmem_error_set(err, -ENOEXEC,
                                      "the xmem shim cannot serve this image: %s (set "
                                      "io.xmem.required=false to run it without external "
                                      "memory)",
                                      why);
        snprintf(notice, notice_len,
                 "not attached: the xmem shim cannot serve this image: %s "
                 "(io.xmem.required=false)",
                 why);
        return 0;
}
