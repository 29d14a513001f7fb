/* elfread.h: the two facts xmem reads from a container image's ELF files: a
 * program's dynamic loader (PT_INTERP) and the newest GLIBC_x.y version a
 * libc.so.6 defines. Pure, bounds-checked functions over a file's bytes (the
 * image is untrusted; tests/fuzz/fuzz_elf.c). */
#pragma once

#include <stddef.h>

/* An x86-64 ELF file's PT_INTERP into RET (LEN bytes): 1 when it has one,
 * 0 when it has none (statically linked), -ENOEXEC when BUF is no ELF file,
 * -EXDEV when it is one for another machine or class, -EBADMSG when it is
 * malformed. RET is untouched unless 1 is returned. */
int elf_interp(const void *buf, size_t len, char *ret, size_t ret_len);

/* The newest GLIBC_MAJOR.MINOR version defined in the .gnu.version_d section
 * of an x86-64 ELF shared object: 0 and *RET_MAJOR, *RET_MINOR set, -ENOENT
 * when it defines no GLIBC version (not glibc's libc), -ENOEXEC, -EXDEV or
 * -EBADMSG as elf_interp. */
int elf_glibc_version(const void *buf, size_t len, unsigned *ret_major, unsigned *ret_minor);
