/* criu.h: xmem-runtime's part of `runc checkpoint` and `runc restore` for
 * xmem containers (docs/containers.md "CRIU"). */
#pragma once

#include "error.h"
#include "runtime-args.h"

/* The file in a checkpoint's image directory that names memd's snapshot of
 * the container's external memory. */
#define CRIU_SNAPSHOT_FILE "xmem-snapshot"

/* Before `checkpoint`: if memd serves container A->id, checkpoint its
 * external memory (memd's `checkpoint`) and record the snapshot's name in the
 * image directory, so that CRIU's image and the external memory go
 * together. 0 also for a container memd does not know (CRIU alone). */
int criu_checkpoint_external(const struct runtime_args *a, struct xmem_error *err);
/* Before `restore`: an image with external memory cannot be restored by
 * CRIU here (it cannot restore a userfaultfd): -EOPNOTSUPP, ERR says what
 * to do instead. 0 for an image without one. */
int criu_restore_check(const struct runtime_args *a, struct xmem_error *err);
