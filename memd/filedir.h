/* filedir.h: the directory of a container's file memory and the unnamed
 * per-process files memd makes there (shim.file, docs/api.md). */
#pragma once

#include <stdint.h>

#include "error.h"

/* The span of one process's file memory: a sparse file of this size, mapped
 * whole; what it may really take is the file system's free space. */
#define FILEDIR_FILE_SIZE (64ULL << 30)

/* Open DIR (absolute) for unnamed files: it must be a directory, writable by
 * its owner alone, on a file system with O_TMPFILE. ERR: "params.file_dir: ...". */
int filedir_open(const char *dir, int *ret_dirfd, struct xmem_error *err);
/* A new unnamed file of SIZE bytes (sparse) in DIRFD. */
int filedir_new_file(int dirfd, uint64_t size, int *ret_fd);
