/* manifest.c: checkpoints' manifests (manifest.h): build, parse and check
 * every field, and the files in STATE_DIR/snapshots. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "memd.h"
#include "pages.h"
#include "state.h"

bool manifest_name_valid(const char *name)
{
        return api_id_valid(name);
}

/* ---- parsing ---- */

struct top_in {
        uint64_t version, created_ms, local_limit, external, local_alloc_limit, chunk_size;
        const char *name, *container, *cgroup, *policy, *appliance;
        json_object *arenas;
};

#define F(n, t, r, m)                                                                              \
        {                                                                                          \
                n, JSON_FIELD_##t, r, offsetof(struct top_in, m)                                   \
        }
static const struct json_field top_fields[] = {
    F("xmem_snapshot", U64, true, version),
    F("name", STRING, true, name),
    F("container", STRING, true, container),
    F("created_ms", U64, true, created_ms),
    F("cgroup", STRING, true, cgroup),
    F("local_limit", U64, true, local_limit),
    F("external", U64, true, external),
    F("local_alloc_limit", U64, true, local_alloc_limit),
    F("policy", STRING, true, policy),
    F("appliance", STRING, false, appliance),
    F("chunk_size", U64, true, chunk_size),
    F("arenas", ARRAY, true, arenas),
    {},
};
#undef F

struct arena_in {
        uint64_t pid, base, size;
        json_object *regions, *extents;
};

#define F(n, t, m)                                                                                 \
        {                                                                                          \
                n, JSON_FIELD_##t, true, offsetof(struct arena_in, m)                              \
        }
static const struct json_field arena_fields[] = {
    F("pid", U64, pid),           F("base", U64, base),         F("size", U64, size),
    F("regions", ARRAY, regions), F("extents", ARRAY, extents), {},
};
#undef F

struct region_in {
        const char *appliance, *key;
        uint64_t id, source;
};

#define F(n, t, m)                                                                                 \
        {                                                                                          \
                n, JSON_FIELD_##t, true, offsetof(struct region_in, m)                             \
        }
static const struct json_field region_fields[] = {
    F("appliance", STRING, appliance),
    F("id", U64, id),
    F("key", STRING, key),
    F("source", U64, source),
    {},
};
#undef F

static int parse_regions(json_object *arr, const char *where, struct manifest_arena *a,
                         struct xmem_error *err)
{
        size_t n = json_object_array_length(arr);

        if (n == 0 || n > MANAGER_MAX_APPLIANCES)
                return xmem_error_set(err, -EINVAL, "%s.regions: must hold 1 to %d regions", where,
                                      MANAGER_MAX_APPLIANCES);
        for (size_t i = 0; i < n; i++) {
                struct manifest_region *mr = &a->regions[i];
                struct region_in in = {};
                char at[96];
                int r;

                snprintf(at, sizeof(at), "%s.regions[%zu]", where, i);
                r = json_dispatch_at(json_object_array_get_idx(arr, i), region_fields, &in,
                                     sizeof(in), false, at, err);
                if (r < 0)
                        return r;
                if (in.id == 0 || in.source == 0 || !*in.appliance ||
                    state_hex_key(in.key, mr->snap.key) < 0)
                        return xmem_error_set(err, -EINVAL,
                                              "%s: needs an id and a source > 0, a key of 32 hex "
                                              "digits and an appliance",
                                              at);
                mr->snap.id = in.id;
                mr->source = in.source;
                mr->appliance = in.appliance;
        }
        a->n_regions = n;
        return 0;
}

/* [[offset, length], ...]: page multiples, sorted, disjoint, within SIZE. */
static int parse_extents(json_object *arr, const char *where, struct manifest_arena *a,
                         struct xmem_error *err)
{
        size_t n = json_object_array_length(arr);
        uint64_t end = 0;

        if (n > MANIFEST_MAX_EXTENTS)
                return xmem_error_set(err, -EINVAL, "%s.extents: more than %u", where,
                                      MANIFEST_MAX_EXTENTS);
        a->extents = calloc(n ?: 1, sizeof(*a->extents));
        if (!a->extents)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(arr, i), *o, *l;
                int64_t off, len;

                if (!json_object_is_type(e, json_type_array) || json_object_array_length(e) != 2 ||
                    !json_object_is_type(o = json_object_array_get_idx(e, 0), json_type_int) ||
                    !json_object_is_type(l = json_object_array_get_idx(e, 1), json_type_int))
                        return xmem_error_set(
                            err, -EINVAL, "%s.extents[%zu]: must be [offset, length]", where, i);
                off = json_object_get_int64(o);
                len = json_object_get_int64(l);
                if (off < 0 || len <= 0 || off % 4096 || len % 4096 || (uint64_t)off < end ||
                    (uint64_t)len > a->size || (uint64_t)off > a->size - (uint64_t)len)
                        return xmem_error_set(err, -EINVAL,
                                              "%s.extents[%zu]: must be pages in order within "
                                              "the arena",
                                              where, i);
                a->extents[i] = (struct manifest_extent){(uint64_t)off, (uint64_t)len};
                end = (uint64_t)off + (uint64_t)len;
        }
        a->n_extents = n;
        return 0;
}

static int parse_arena(json_object *o, size_t i, struct manifest_arena *a, struct xmem_error *err)
{
        struct arena_in in = {};
        char where[32];
        int r;

        snprintf(where, sizeof(where), "arenas[%zu]", i);
        r = json_dispatch_at(o, arena_fields, &in, sizeof(in), false, where, err);
        if (r < 0)
                return r;
        r = state_check_arena(where, in.pid, "size", in.size, err);
        if (r < 0)
                return r;
        if (in.base == 0 || in.base % 4096 || in.base >= MANIFEST_MAX_ADDR ||
            in.size > MANIFEST_MAX_ADDR - in.base)
                return xmem_error_set(err, -EINVAL, "%s.base: must be a page-aligned address",
                                      where);
        a->pid = (pid_t)in.pid;
        a->base = in.base;
        a->size = in.size;
        r = parse_regions(in.regions, where, a, err);
        if (r >= 0)
                r = parse_extents(in.extents, where, a, err);
        return r;
}

static int parse_top(json_object *root, struct top_in *t, struct manifest *m,
                     struct xmem_error *err)
{
        int r = json_dispatch(root, top_fields, t, sizeof(*t), false, err);

        if (r < 0)
                return r;
        if (t->version != MANIFEST_VERSION)
                return xmem_error_set(err, -EPROTONOSUPPORT, "xmem_snapshot: version %llu, not %d",
                                      (unsigned long long)t->version, MANIFEST_VERSION);
        if (!manifest_name_valid(t->name))
                return xmem_error_set(err, -EINVAL, "name: must match [A-Za-z0-9_.-]{1,128}");
        m->name = t->name;
        m->created_ms = t->created_ms;
        m->attach = (struct api_attach){.id = t->container,
                                        .cgroup = t->cgroup,
                                        .local_limit = t->local_limit,
                                        .external = t->external,
                                        .policy_text = t->policy,
                                        .local_alloc_limit = t->local_alloc_limit,
                                        .appliance = t->appliance};
        r = api_attach_validate(&m->attach, err);
        if (r < 0)
                return r;
        if (t->chunk_size < 4096 || t->chunk_size > (2U << 20) ||
            (t->chunk_size & (t->chunk_size - 1)))
                return xmem_error_set(err, -EINVAL, "chunk_size: must be a power of two, 4K..2M");
        m->chunk_size = (uint32_t)t->chunk_size;
        return 0;
}

int manifest_parse(const char *buf, size_t len, struct manifest *ret, struct xmem_error *err)
{
        _cleanup_json_ json_object *root = NULL;
        struct manifest m = {};
        struct top_in t = {};
        size_t n;
        int r;

        r = json_parse(buf, len, &root, err);
        if (r < 0)
                return r;
        r = parse_top(root, &t, &m, err);
        if (r < 0)
                return r;
        n = json_object_array_length(t.arenas);
        if (n == 0 || n > MANIFEST_MAX_ARENAS)
                return xmem_error_set(err, -EINVAL, "arenas: must hold 1 to %d arenas",
                                      MANIFEST_MAX_ARENAS);
        m.arenas = calloc(n, sizeof(*m.arenas));
        if (!m.arenas)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        m.n_arenas = n;
        for (size_t i = 0; i < n && r >= 0; i++) {
                r = parse_arena(json_object_array_get_idx(t.arenas, i), i, &m.arenas[i], err);
                for (size_t j = 0; r >= 0 && j < i; j++)
                        if (m.arenas[j].pid == m.arenas[i].pid)
                                r = xmem_error_set(err, -EINVAL, "arenas[%zu].pid: %d twice", i,
                                                   (int)m.arenas[i].pid);
        }
        if (r < 0) {
                manifest_done(&m);
                return r;
        }
        m.json_ = TAKE_PTR(root);
        *ret = m;
        return 0;
}

void manifest_done(struct manifest *m)
{
        for (size_t i = 0; m->arenas && i < m->n_arenas; i++)
                free(m->arenas[i].extents);
        free(m->arenas);
        if (m->json_)
                json_object_put(m->json_);
        *m = (struct manifest){};
}

/* ---- building ---- */

/* The pages of A that hold data (written, or inherited, or in the store). */
int manifest_extents_of(struct arena *a, struct manifest_arena *ma)
{
        size_t cap = 64;

        ma->extents = calloc(cap, sizeof(*ma->extents));
        if (!ma->extents)
                return -ENOMEM;
        pthread_mutex_lock(&a->lock);
        for (uint64_t c = 0; c < a->n_chunks; c++) {
                struct manifest_extent *last =
                    ma->n_extents ? &ma->extents[ma->n_extents - 1] : NULL;
                uint64_t off = c * a->chunk_size;

                if (!a->stored[c] && a->charge[c] == PAGE_UNCHARGED)
                        continue;
                if (last &&
                    (last->offset + last->len == off || ma->n_extents == MANIFEST_MAX_EXTENTS)) {
                        last->len = off + a->chunk_size - last->offset; /* over the cap: wider */
                        continue;
                }
                if (ma->n_extents == cap) {
                        struct manifest_extent *e = realloc(ma->extents, 2 * cap * sizeof(*e));
                        if (!e) {
                                pthread_mutex_unlock(&a->lock);
                                return -ENOMEM;
                        }
                        ma->extents = e;
                        cap *= 2;
                }
                ma->extents[ma->n_extents++] = (struct manifest_extent){off, a->chunk_size};
        }
        pthread_mutex_unlock(&a->lock);
        return 0;
}


static json_object *u64(uint64_t v)
{
        return json_object_new_int64((int64_t)MIN(v, (uint64_t)INT64_MAX));
}

static json_object *arena_json(const struct manifest_arena *a)
{
        json_object *o = json_object_new_object(), *regs = json_object_new_array(),
                    *ext = json_object_new_array();

        json_object_object_add(o, "pid", u64((uint64_t)a->pid));
        json_object_object_add(o, "base", u64(a->base));
        json_object_object_add(o, "size", u64(a->size));
        for (size_t i = 0; i < a->n_regions; i++) {
                json_object *r = state_region_json(a->regions[i].appliance, &a->regions[i].snap);
                json_object_object_add(r, "source", u64(a->regions[i].source));
                json_object_array_add(regs, r);
        }
        json_object_object_add(o, "regions", regs);
        for (size_t i = 0; i < a->n_extents; i++) {
                json_object *e = json_object_new_array();
                json_object_array_add(e, u64(a->extents[i].offset));
                json_object_array_add(e, u64(a->extents[i].len));
                json_object_array_add(ext, e);
        }
        json_object_object_add(o, "extents", ext);
        return o;
}

json_object *manifest_to_json(const struct manifest *m)
{
        json_object *o = json_object_new_object(), *arenas = json_object_new_array();
        char pol[32];

        json_object_object_add(o, "xmem_snapshot", u64(MANIFEST_VERSION));
        json_object_object_add(o, "name", json_object_new_string(m->name));
        json_object_object_add(o, "container", json_object_new_string(m->attach.id));
        json_object_object_add(o, "created_ms", u64(m->created_ms));
        json_object_object_add(o, "cgroup", json_object_new_string(m->attach.cgroup));
        json_object_object_add(o, "local_limit", u64(m->attach.local_limit));
        json_object_object_add(o, "external", u64(m->attach.external));
        json_object_object_add(o, "local_alloc_limit", u64(m->attach.local_alloc_limit));
        json_object_object_add(
            o, "policy",
            json_object_new_string(api_policy_format(&m->attach.policy, pol, sizeof(pol))));
        if (m->attach.appliance)
                json_object_object_add(o, "appliance", json_object_new_string(m->attach.appliance));
        json_object_object_add(o, "chunk_size", u64(m->chunk_size));
        for (size_t i = 0; i < m->n_arenas; i++)
                json_object_array_add(arenas, arena_json(&m->arenas[i]));
        json_object_object_add(o, "arenas", arenas);
        return o;
}

json_object *manifest_summary_json(const struct manifest *m)
{
        json_object *o = json_object_new_object(), *apps = json_object_new_array();
        uint64_t data = 0;

        for (size_t i = 0; i < m->n_arenas; i++)
                for (size_t k = 0; k < m->arenas[i].n_extents; k++)
                        data += m->arenas[i].extents[k].len;
        for (size_t i = 0; m->n_arenas && i < m->arenas[0].n_regions; i++)
                json_object_array_add(apps,
                                      json_object_new_string(m->arenas[0].regions[i].appliance));
        json_object_object_add(o, "name", json_object_new_string(m->name));
        json_object_object_add(o, "container", json_object_new_string(m->attach.id));
        json_object_object_add(o, "created_ms", u64(m->created_ms));
        json_object_object_add(o, "arenas", u64(m->n_arenas));
        json_object_object_add(o, "data_bytes", u64(data));
        json_object_object_add(o, "external", u64(m->attach.external));
        json_object_object_add(o, "appliances", apps);
        return o;
}

/* ---- the files ---- */

int manifest_load(struct manager *mgr, const char *name, struct manifest *ret,
                  struct xmem_error *err)
{
        _cleanup_free_ char *buf = NULL;
        char file[API_ID_MAX + 8];
        size_t len = 0;
        int r;

        if (!manifest_name_valid(name))
                return xmem_error_set(err, -EINVAL,
                                      "snapshot name: must match "
                                      "[A-Za-z0-9_.-]{1,128}");
        snprintf(file, sizeof(file), "%s.json", name);
        r = state_read_file(mgr->snap_dirfd, file, &buf, &len, err);
        if (r == -ENOENT)
                return xmem_error_set(err, -ENOENT, "no snapshot named %s", name);
        if (r >= 0)
                r = manifest_parse(buf, len, ret, err);
        if (r < 0)
                return xmem_error_prefix(err, "snapshot %s", name);
        if (strcmp(ret->name, name) != 0) {
                manifest_done(ret);
                return xmem_error_set(err, -EINVAL, "snapshot %s: its manifest names %s", name,
                                      ret->name);
        }
        return 0;
}

int manifest_save(struct manager *mgr, const struct manifest *m, struct xmem_error *err)
{
        _cleanup_json_ json_object *o = manifest_to_json(m);

        if (mgr->snap_dirfd < 0)
                return xmem_error_set(err, -ENOTDIR, "memd has no state directory");
        return state_write_json(mgr->snap_dirfd, m->name, o, err);
}

int manifest_remove(struct manager *mgr, const char *name)
{
        char file[API_ID_MAX + 8];

        snprintf(file, sizeof(file), "%s.json", name);
        if (unlinkat(mgr->snap_dirfd, file, 0) < 0)
                return negative_errno();
        return fsync(mgr->snap_dirfd) < 0 ? negative_errno() : 0;
}

bool manifest_exists(struct manager *mgr, const char *name)
{
        char file[API_ID_MAX + 8];

        snprintf(file, sizeof(file), "%s.json", name);
        return faccessat(mgr->snap_dirfd, file, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

int manifest_each(struct manager *mgr, int (*fn)(const struct manifest *m, void *data), void *data)
{
        int fd = fcntl(mgr->snap_dirfd, F_DUPFD_CLOEXEC, 3), r = 0;
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        struct dirent *de;

        if (!d) {
                safe_close(fd);
                return negative_errno();
        }
        rewinddir(d); /* the offset is shared with snap_dirfd: the last walk left it at the end */
        while (r >= 0 && (de = readdir(d))) {
                size_t l = strlen(de->d_name);
                struct xmem_error err = {};
                struct manifest m = {};
                char name[API_ID_MAX + 1];

                if (de->d_name[0] == '.' || l < 6 || l - 5 > API_ID_MAX ||
                    strcmp(de->d_name + l - 5, ".json") != 0)
                        continue;
                snprintf(name, sizeof(name), "%.*s", (int)(l - 5), de->d_name);
                if (manifest_load(mgr, name, &m, &err) < 0) {
                        log_error("%s (skipped)", xmem_error_str(&err));
                        continue;
                }
                r = fn(&m, data);
                manifest_done(&m);
        }
        closedir(d);
        return r;
}
