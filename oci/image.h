/* image.h: can libxmem-shim.so load in a container image? Read from the
 * rootfs before anything is attached: the entrypoint's dynamic loader, the
 * image's glibc loader and its libc.so.6's version (docs/containers.md
 * "Images the shim cannot serve"). */
#pragma once

#include <stddef.h>

#include "annotations.h"
#include "error.h"
#include "oci.h"

#define IMAGE_GLIBC_MIN_MAJOR 2
#define IMAGE_GLIBC_MIN_MINOR 17 /* the shim's newest symbol version (shim_glibc test) */

/* 1: the shim loads in the image under ROOTFS (the host path of root.path)
 * running C's process.args; 0: it cannot, WHY holds one line saying why
 * ("entrypoint /bin/busybox is statically linked and the image has no glibc
 * loader"); <0: the rootfs cannot be read, WHY says so. */
int image_check(const char *rootfs, const struct oci_config *c, char *why, size_t why_len);

/* The decision for an io.xmem.enable=true container whose image is under
 * ROOTFS: 1 attach it; 0 run it unattached (io.xmem.required=false and the
 * shim cannot serve the image; NOTICE holds the line to print); <0 refuse
 * (ERR says why in one line). */
int image_gate(const char *rootfs, const struct oci_config *c, const struct xmem_annotations *x,
               char *notice, size_t notice_len, struct xmem_error *err);
