/* xmem.h: the optional application API of xmem (docs/shim.md "Named roots").
 *
 * A process whose external memory is checkpointed (xmemctl checkpoint) and
 * later restored into a new container (io.xmem.restore, xmemctl restore
 * --new) gets its arena back at the same virtual address, so the pointers
 * inside it stay valid; a named root is how it finds its data again:
 *
 *     struct db *db = xmem_root_get("db");
 *     if (!db) {
 *             db = malloc(sizeof(*db) + ...);   (in the external arena)
 *             ...
 *             xmem_root_set("db", db);
 *     }
 *
 * The table lives in the arena (its last page) and holds 63 roots. The
 * functions are libxmem-shim.so's (LD_PRELOAD): the declarations are weak,
 * so a program built with this header also runs without the shim, where
 * xmem_available() is false. */
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

#define XMEM_ROOT_NAME_MAX 55 /* bytes of a root's name, without the NUL */

/* Name P (a pointer into this process's external arena; NULL removes the
 * name). 0, or -ENODEV (no arena: not attached), -EINVAL (a name empty or
 * longer than XMEM_ROOT_NAME_MAX, or P not in the arena), -ENOSPC (63 names
 * taken), -ENOENT (removing a name that is not there). */
int xmem_root_set(const char *name, void *p) __attribute__((weak));
/* The pointer named NAME, or NULL (no such root, or not attached). */
void *xmem_root_get(const char *name) __attribute__((weak));

/* Is the shim loaded (the functions above can be called)? */
static inline int xmem_available(void)
{
        return xmem_root_set != 0 && xmem_root_get != 0;
}

#ifdef __cplusplus
}
#endif
