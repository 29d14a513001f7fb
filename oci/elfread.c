/* elfread.c: a container image's ELF files, read only as far as xmem needs: the
 * program interpreter and the glibc version of a libc.so.6. Every offset and
 * count from the file is checked against the buffer before use. */
#include <elf.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "elfread.h"

#define VERDEF_MAX 4096 /* glibc 2.36's libc.so.6 defines 44 versions */

/* [OFF, OFF + N * SIZE) lies within LEN. */
static bool in_bounds(size_t len, uint64_t off, uint64_t n, uint64_t size)
{
        return off <= len && (size == 0 || n <= (len - off) / size);
}

/* BUF's header, checked with its program (SECTIONS false) or section header
 * table: every entry within LEN. */
static int check_header(const void *buf, size_t len, bool sections, const Elf64_Ehdr **ret)
{
        const Elf64_Ehdr *eh = buf;
        uint64_t off;
        unsigned n, entsize;

        if (len < EI_NIDENT || memcmp(buf, ELFMAG, SELFMAG) != 0)
                return -ENOEXEC;
        if (len < sizeof(*eh))
                return -EBADMSG;
        if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
            eh->e_machine != EM_X86_64)
                return -EXDEV;
        off = sections ? eh->e_shoff : eh->e_phoff;
        n = sections ? eh->e_shnum : eh->e_phnum;
        entsize = sections ? eh->e_shentsize : eh->e_phentsize;
        if (n && (entsize < (sections ? sizeof(Elf64_Shdr) : sizeof(Elf64_Phdr)) ||
                  !in_bounds(len, off, n, entsize)))
                return -EBADMSG;
        *ret = eh;
        return 0;
}

int elf_interp(const void *buf, size_t len, char *ret, size_t ret_len)
{
        const Elf64_Ehdr *eh;
        int r = check_header(buf, len, false, &eh);

        if (r < 0)
                return r;
        for (unsigned i = 0; i < eh->e_phnum; i++) {
                Elf64_Phdr ph;
                const char *s;

                memcpy(&ph, (const char *)buf + eh->e_phoff + (size_t)i * eh->e_phentsize,
                       sizeof(ph));
                if (ph.p_type != PT_INTERP)
                        continue;
                if (!in_bounds(len, ph.p_offset, ph.p_filesz, 1) || ph.p_filesz < 2)
                        return -EBADMSG;
                s = (const char *)buf + ph.p_offset;
                if (!memchr(s, 0, ph.p_filesz) || strlen(s) + 1 > ret_len)
                        return -EBADMSG;
                memcpy(ret, s, strlen(s) + 1);
                return 1;
        }
        return 0;
}

static bool section(const void *buf, size_t len, const Elf64_Ehdr *eh, unsigned i, Elf64_Shdr *ret)
{
        if (i >= eh->e_shnum)
                return false;
        memcpy(ret, (const char *)buf + eh->e_shoff + (size_t)i * eh->e_shentsize, sizeof(*ret));
        return ret->sh_type == SHT_NOBITS || in_bounds(len, ret->sh_offset, ret->sh_size, 1);
}

/* "GLIBC_2.17" -> 2, 17 (a third component ignored). */
static bool glibc_name(const char *s, size_t max, unsigned *major, unsigned *minor)
{
        unsigned v[2] = {};
        size_t i = 6;

        if (max < 8 || strncmp(s, "GLIBC_", 6) != 0)
                return false;
        for (int part = 0; part < 2; part++) {
                size_t start = i;
                while (i < max && s[i] >= '0' && s[i] <= '9' && i - start < 4)
                        v[part] = v[part] * 10 + (unsigned)(s[i++] - '0');
                if (i == start)
                        return false;
                if (part == 0 && (i >= max || s[i++] != '.'))
                        return false;
        }
        *major = v[0];
        *minor = v[1];
        return true;
}

int elf_glibc_version(const void *buf, size_t len, unsigned *ret_major, unsigned *ret_minor)
{
        const Elf64_Ehdr *eh;
        Elf64_Shdr vs, strs;
        unsigned best_major = 0, best_minor = 0;
        bool found = false;
        int r = check_header(buf, len, true, &eh);

        if (r < 0)
                return r;
        for (unsigned i = 0; i < eh->e_shnum; i++) {
                uint64_t off;

                if (!section(buf, len, eh, i, &vs))
                        return -EBADMSG;
                if (vs.sh_type != SHT_GNU_verdef)
                        continue;
                if (!section(buf, len, eh, vs.sh_link, &strs) || strs.sh_type != SHT_STRTAB)
                        return -EBADMSG;
                off = 0;
                for (unsigned n = 0; n < vs.sh_info && n < VERDEF_MAX; n++) {
                        Elf64_Verdef vd;
                        Elf64_Verdaux va;
                        unsigned major, minor;

                        if (!in_bounds(vs.sh_size, off, 1, sizeof(vd)))
                                return -EBADMSG;
                        memcpy(&vd, (const char *)buf + vs.sh_offset + off, sizeof(vd));
                        if (!in_bounds(vs.sh_size, off + vd.vd_aux, 1, sizeof(va)))
                                return -EBADMSG;
                        memcpy(&va, (const char *)buf + vs.sh_offset + off + vd.vd_aux, sizeof(va));
                        if (va.vda_name >= strs.sh_size)
                                return -EBADMSG;
                        if (glibc_name((const char *)buf + strs.sh_offset + va.vda_name,
                                       strs.sh_size - va.vda_name, &major, &minor) &&
                            (!found || major > best_major ||
                             (major == best_major && minor > best_minor))) {
                                found = true;
                                best_major = major;
                                best_minor = minor;
                        }
                        if (vd.vd_next == 0)
                                break;
                        off += vd.vd_next;
                }
        }
        if (!found)
                return -ENOENT;
        *ret_major = best_major;
        *ret_minor = best_minor;
        return 0;
}
