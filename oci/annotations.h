/* annotations.h: the io.xmem.* container annotations (docs/annotations.md),
 * validated strictly; every refusal is one line naming the annotation and the
 * accepted form. Pure functions. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <json-c/json.h>

#include "error.h"

#define XMEM_ANNOTATION_PREFIX "io.xmem."
#define XMEM_MIN_LOCAL_LIMIT (4ULL << 20) /* memd's lower bound */
#define XMEM_MAX_SIZE (1ULL << 50)        /* 1P, memd's upper bound */
#define XMEM_DEFAULT_EXTERNAL_FACTOR 4    /* external = 4 x local-limit by default */

struct xmem_annotations {
        bool enable;           /* io.xmem.enable=true */
        bool any;              /* at least one io.xmem.* key was present */
        bool required;         /* io.xmem.required (default true): refuse an image the
                                * shim cannot serve rather than run it unattached */
        uint64_t local_limit;  /* bytes */
        uint64_t external;     /* bytes */
        char policy[32];       /* local-first, external-first, ratio:N */
        char appliance[256];   /* "" = memd's default */
        char file_dir[4096];   /* "" = none */
        char restore[129];     /* "" = none */
};

/* Validate the annotations object (string -> string; NULL = none).
 * FALLBACK_LOCAL_LIMIT (linux.resources.memory.limit, 0 = none) is the local
 * limit when io.xmem.local-limit is absent. Keys outside io.xmem.* are ignored.
 * On success *RET holds the effective values with defaults applied. */
int xmem_annotations_parse(json_object *annotations, uint64_t fallback_local_limit,
                           struct xmem_annotations *ret, struct xmem_error *err);

/* Value of annotation KEY if it is a string, else NULL. */
const char *xmem_annotation_get(json_object *annotations, const char *key);
