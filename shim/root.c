/* root.c: the application's named roots (include/xmem/xmem.h): a table in the
 * arena's last page, so a snapshot carries it and a process restored from
 * the snapshot (its arena at the same address) finds its data again. */
#include <errno.h>
#include <string.h>

#include <xmem/xmem.h>

#include "shim.h"

#define ROOT_MAGIC 0x544f4f524d454d58ULL /* "XMEMROOT" */

struct root_entry {
        char name[XMEM_ROOT_NAME_MAX + 1];
        uint64_t ptr;
};

struct root_page {
        uint64_t magic;
        uint64_t reserved[7];
        struct root_entry e[(SHIM_PAGE - 64) / sizeof(struct root_entry)];
};

_Static_assert(sizeof(struct root_page) <= SHIM_PAGE, "one page");

static struct root_page *root_page(void)
{
        return (struct root_page *)(shim_state.arena.base + shim_state.arena.size - SHIM_PAGE);
}

/* Is P inside the arena, outside the root page? */
static bool root_target_ok(const void *p)
{
        return shim_in_arena(p, 1) &&
               (uint64_t)p < shim_state.arena.base + shim_state.arena.size - SHIM_PAGE;
}

static bool name_ok(const char *name)
{
        size_t n = name ? strnlen(name, XMEM_ROOT_NAME_MAX + 1) : 0;

        return n > 0 && n <= XMEM_ROOT_NAME_MAX;
}

__attribute__((visibility("default"))) int xmem_root_set(const char *name, void *p)
{
        struct root_page *page;
        struct root_entry *free_e = NULL;
        int r = -ENOSPC;

        if (!atomic_load_explicit(&shim_state.attached, memory_order_acquire))
                return -ENODEV;
        if (!name_ok(name) || (p && !root_target_ok(p)))
                return -EINVAL;
        pthread_mutex_lock(&shim_state.lock);
        page = root_page();
        if (page->magic != ROOT_MAGIC) { /* a new arena reads as zeros */
                memset(page, 0, sizeof(*page));
                page->magic = ROOT_MAGIC;
        }
        shim_state.reserved_pages = 0; /* the root page holds data now */
        for (size_t i = 0; i < sizeof(page->e) / sizeof(page->e[0]); i++) {
                struct root_entry *e = &page->e[i];
                if (e->name[0] && strcmp(e->name, name) == 0) {
                        if (!p)
                                memset(e, 0, sizeof(*e));
                        else
                                e->ptr = (uint64_t)p;
                        free_e = NULL;
                        r = 0;
                        break;
                }
                if (!e->name[0] && !free_e)
                        free_e = e;
        }
        if (r < 0 && !p)
                r = -ENOENT;
        else if (r < 0 && free_e) {
                strcpy(free_e->name, name);
                free_e->ptr = (uint64_t)p;
                r = 0;
        }
        pthread_mutex_unlock(&shim_state.lock);
        return r;
}

__attribute__((visibility("default"))) void *xmem_root_get(const char *name)
{
        struct root_page *page;
        void *found = NULL;

        if (!atomic_load_explicit(&shim_state.attached, memory_order_acquire) || !name_ok(name))
                return NULL;
        pthread_mutex_lock(&shim_state.lock);
        page = root_page();
        for (size_t i = 0; page->magic == ROOT_MAGIC && i < sizeof(page->e) / sizeof(page->e[0]);
             i++)
                if (page->e[i].name[0] &&
                    strncmp(page->e[i].name, name, sizeof(page->e[i].name)) == 0) {
                        /* the page is the application's memory: trust no pointer in it */
                        if (root_target_ok((void *)page->e[i].ptr))
                                found = (void *)page->e[i].ptr;
                        break;
                }
        pthread_mutex_unlock(&shim_state.lock);
        return found;
}
