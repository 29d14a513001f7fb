/* test_image.c: oci/elfread.c on real and broken ELF files, and oci/image.c's
 * verdict on small rootfs trees (glibc, static-only, musl, #! scripts,
 * io.xmem.required=false). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../oci/elfread.h"
#include "../../oci/image.h"
#include "fdio.h"
#include "unit-files.h"

static char *slurp(const char *path, size_t *ret_len)
{
        struct stat st;
        char *buf;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        cr_assert(fd >= 0 && fstat(fd, &st) == 0, "%s: %m", path);
        buf = malloc((size_t)st.st_size);
        cr_assert(buf && read_full(fd, buf, (size_t)st.st_size) == 0);
        close(fd);
        *ret_len = (size_t)st.st_size;
        return buf;
}

Test(elfread, interp_of_dynamic_and_static_programs)
{
        char interp[256] = "";
        size_t len;
        char *buf = slurp("/proc/self/exe", &len);

        cr_expect_eq(elf_interp(buf, len, interp, sizeof(interp)), 1);
        cr_expect_str_eq(interp, "/lib64/ld-linux-x86-64.so.2");
        cr_expect_eq(elf_interp(buf, len, interp, 4), -EBADMSG, "a too small buffer is refused");
        for (size_t cut = 0; cut < 1024; cut += 7)
                cr_expect_leq(elf_interp(buf, cut, interp, sizeof(interp)), 1);
        free(buf);
        if (access("/bin/busybox", R_OK) == 0) {
                buf = slurp("/bin/busybox", &len);
                cr_expect_eq(elf_interp(buf, len, interp, sizeof(interp)), 0, "busybox is static");
                free(buf);
        }
        cr_expect_eq(elf_interp("#!/bin/sh\n", 10, interp, sizeof(interp)), -ENOEXEC);
}

Test(elfread, glibc_version_of_libc)
{
        unsigned major = 0, minor = 0;
        size_t len;
        char *buf = slurp("/lib/x86_64-linux-gnu/libc.so.6", &len);

        cr_assert_eq(elf_glibc_version(buf, len, &major, &minor), 0);
        cr_expect(major == 2 && minor >= 17, "%u.%u", major, minor);
        for (size_t cut = 64; cut < len; cut += len / 97 + 1)
                cr_expect_neq(elf_glibc_version(buf, cut, &major, &minor), 1);
        free(buf);
        buf = slurp("/proc/self/exe", &len);
        cr_expect_eq(elf_glibc_version(buf, len, &major, &minor), -ENOENT, "not a libc");
        free(buf);
}

static char root[64];

static void mkroot(void)
{
        snprintf(root, sizeof(root), "/tmp/gs-image-XXXXXX");
        cr_assert(mkdtemp(root));
}

static void rmroot(void)
{
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        cr_expect_eq(system(cmd), 0);
}

static void put(const char *rel, const char *from)
{
        char cmd[512];

        snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s/%s')\" && cp -L '%s' '%s/%s'", root,
                 rel, from, root, rel);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void put_text(const char *rel, const char *text)
{
        unit_put_file(root, rel, text, 0755);
}

static int check(const char *args_json, char *why, size_t len)
{
        char text[1024];
        struct oci_config *c = NULL;
        struct xmem_error err = {};
        int r;

        snprintf(text, sizeof(text),
                 "{\"root\":{\"path\":\"%s\"},\"process\":{\"args\":%s,"
                 "\"env\":[\"PATH=/usr/bin:/bin\"]}}",
                 root, args_json);
        cr_assert_eq(oci_config_parse(text, strlen(text), &c, &err), 0, "%s", err.msg);
        r = image_check(root, c, why, len);
        oci_config_free(c);
        return r;
}

Test(image, glibc_image_static_entry_musl_and_scripts, .init = mkroot, .fini = rmroot)
{
        char why[512] = "";

        cr_assert_eq(access("/bin/busybox", X_OK), 0, "busybox-static is a build dependency");
        put("bin/busybox", "/bin/busybox");
        cr_expect_eq(check("[\"busybox\",\"sh\"]", why, sizeof(why)), 0);
        cr_expect(strstr(why, "entrypoint /bin/busybox is statically linked"), "%s", why);
        cr_expect_eq(check("[]", why, sizeof(why)), 0);
        cr_expect(strstr(why, "no glibc loader"), "%s", why);

        put_text("lib/ld-musl-x86_64.so.1", "not really musl\n");
        cr_expect_eq(check("[\"/bin/busybox\"]", why, sizeof(why)), 0);
        cr_expect(strstr(why, "musl"), "%s", why);

        /* glibc's loader and libc: a static entrypoint may start dynamic programs */
        put("lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2");
        put("lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6");
        put("bin/true", "/bin/true");
        cr_expect_eq(check("[\"/bin/busybox\"]", why, sizeof(why)), 1, "%s", why);
        cr_expect_eq(check("[\"true\"]", why, sizeof(why)), 1, "%s", why);
        put_text("bin/script", "#!/bin/true -x\n");
        cr_expect_eq(check("[\"script\"]", why, sizeof(why)), 1, "%s", why);

        /* a libc.so.6 that is not glibc's */
        put("lib/x86_64-linux-gnu/libc.so.6", "/bin/true");
        cr_expect_eq(check("[\"true\"]", why, sizeof(why)), 0);
        cr_expect(strstr(why, "is not glibc's libc"), "%s", why);
}

Test(image, gate_refuses_or_runs_unattached, .init = mkroot, .fini = rmroot)
{
        char text[512], notice[640] = "";
        struct oci_config *c = NULL;
        struct xmem_error err = {};
        struct xmem_annotations x = {.enable = true, .required = true};

        put("bin/busybox", "/bin/busybox");
        snprintf(text, sizeof(text),
                 "{\"root\":{\"path\":\"%s\"},\"process\":{\"args\":"
                 "[\"/bin/busybox\"]}}",
                 root);
        cr_assert_eq(oci_config_parse(text, strlen(text), &c, &err), 0);
        cr_expect_eq(image_gate(root, c, &x, notice, sizeof(notice), &err), -ENOEXEC);
        cr_expect(strstr(err.msg, "cannot serve this image: entrypoint /bin/busybox is "
                                  "statically linked") &&
                      strstr(err.msg, "io.xmem.required=false") && !strchr(err.msg, '\n'),
                  "%s", err.msg);
        x.required = false;
        cr_expect_eq(image_gate(root, c, &x, notice, sizeof(notice), &err), 0);
        cr_expect(strstr(notice, "not attached"), "%s", notice);
        cr_expect_eq(image_gate("/nonexistent-gs", c, &x, notice, sizeof(notice), &err), -ENOENT);
        oci_config_free(c);
}
