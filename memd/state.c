/* state.c: memd's state directory (state.h): the per-container files, how
 * they are written (tmp, fsync, rename, fsync of the directory), read back
 * and checked, and moved aside when bad. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "memd.h"
#include "state.h"
#include "store.h"

#define STATE_SUBDIR "containers"

/* ---- parsing ---- */

struct state_top {
        uint64_t version;
        const char *id, *cgroup, *policy, *appliance, *file_dir;
        uint64_t local_limit, external, external_max, local_alloc_limit, chunk_size, acct_ino;
        json_object *processes, *fork_clones;
};

static const struct json_field top_fields[] = {
    {"xmem_state", JSON_FIELD_U64, true, offsetof(struct state_top, version)},
    {"id", JSON_FIELD_STRING, true, offsetof(struct state_top, id)},
    {"cgroup", JSON_FIELD_STRING, true, offsetof(struct state_top, cgroup)},
    {"local_limit", JSON_FIELD_U64, true, offsetof(struct state_top, local_limit)},
    {"external", JSON_FIELD_U64, true, offsetof(struct state_top, external)},
    {"external_max", JSON_FIELD_U64, false, offsetof(struct state_top, external_max)},
    {"local_alloc_limit", JSON_FIELD_U64, true, offsetof(struct state_top, local_alloc_limit)},
    {"policy", JSON_FIELD_STRING, true, offsetof(struct state_top, policy)},
    {"appliance", JSON_FIELD_STRING, false, offsetof(struct state_top, appliance)},
    {"file_dir", JSON_FIELD_STRING, false, offsetof(struct state_top, file_dir)},
    {"chunk_size", JSON_FIELD_U64, true, offsetof(struct state_top, chunk_size)},
    {"processes", JSON_FIELD_ARRAY, true, offsetof(struct state_top, processes)},
    {"fork_clones", JSON_FIELD_ARRAY, false, offsetof(struct state_top, fork_clones)},
    {"acct_ino", JSON_FIELD_U64, false, offsetof(struct state_top, acct_ino)},
    {},
};

struct state_proc_in {
        uint64_t pid, start_time, arena_size, memfd_ino, acct_slot;
        json_object *regions;
};

static const struct json_field proc_fields[] = {
    {"pid", JSON_FIELD_U64, true, offsetof(struct state_proc_in, pid)},
    {"start_time", JSON_FIELD_U64, true, offsetof(struct state_proc_in, start_time)},
    {"arena_size", JSON_FIELD_U64, true, offsetof(struct state_proc_in, arena_size)},
    {"memfd_ino", JSON_FIELD_U64, true, offsetof(struct state_proc_in, memfd_ino)},
    {"acct_slot", JSON_FIELD_U64, true, offsetof(struct state_proc_in, acct_slot)},
    {"regions", JSON_FIELD_ARRAY, true, offsetof(struct state_proc_in, regions)},
    {},
};

struct state_clone_in {
        uint64_t arena_size;
        json_object *regions;
};

static const struct json_field clone_fields[] = {
    {"arena_size", JSON_FIELD_U64, true, offsetof(struct state_clone_in, arena_size)},
    {"regions", JSON_FIELD_ARRAY, true, offsetof(struct state_clone_in, regions)},
    {},
};

struct state_region_in {
        const char *appliance, *key;
        uint64_t id;
};

static const struct json_field region_fields[] = {
    {"appliance", JSON_FIELD_STRING, true, offsetof(struct state_region_in, appliance)},
    {"id", JSON_FIELD_U64, true, offsetof(struct state_region_in, id)},
    {"key", JSON_FIELD_STRING, true, offsetof(struct state_region_in, key)},
    {},
};

int state_hex_key(const char *s, uint8_t key[XMEM_KEY_SIZE])
{
        if (strlen(s) != 2 * XMEM_KEY_SIZE)
                return -EINVAL;
        for (size_t i = 0; i < XMEM_KEY_SIZE; i++) {
                unsigned v = 0;
                for (size_t j = 0; j < 2; j++) {
                        char c = s[2 * i + j];
                        int d = c >= '0' && c <= '9'   ? c - '0'
                                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                       : -1;
                        if (d < 0)
                                return -EINVAL;
                        v = v * 16 + (unsigned)d;
                }
                key[i] = (uint8_t)v;
        }
        return 0;
}

static int parse_regions(json_object *arr, const char *where, struct state_process *p,
                         struct xmem_error *err)
{
        size_t n;

        if (!json_object_is_type(arr, json_type_array))
                return xmem_error_set(err, -EINVAL, "%s.regions: must be an array", where);
        n = json_object_array_length(arr);
        if (n == 0 || n > MANAGER_MAX_APPLIANCES)
                return xmem_error_set(err, -EINVAL, "%s.regions: must hold 1 to %d regions", where,
                                      MANAGER_MAX_APPLIANCES);
        for (size_t i = 0; i < n; i++) {
                struct state_region_in in = {};
                char at[96];
                int r;

                snprintf(at, sizeof(at), "%s.regions[%zu]", where, i);
                r = json_dispatch_at(json_object_array_get_idx(arr, i), region_fields, &in,
                                     sizeof(in), false, at, err);
                if (r < 0)
                        return r;
                if (in.id == 0 || state_hex_key(in.key, p->regions[i].ref.key) < 0 ||
                    !*in.appliance)
                        return xmem_error_set(err, -EINVAL,
                                              "%s: needs an id > 0, a key of 32 hex digits and "
                                              "an appliance",
                                              at);
                p->regions[i].ref.id = in.id;
                p->regions[i].appliance = in.appliance;
        }
        p->n_regions = n;
        return 0;
}

static int check_size(const char *where, const char *size_name, uint64_t size,
                      struct xmem_error *err)
{
        if (size == 0 || size > API_MAX_SIZE || size % 4096)
                return xmem_error_set(err, -EINVAL, "%s.%s: must be pages, at most 1P", where,
                                      size_name);
        return 0;
}

int state_check_arena(const char *where, uint64_t pid, const char *size_name, uint64_t size,
                      struct xmem_error *err)
{
        if (pid == 0 || pid > INT32_MAX)
                return xmem_error_set(err, -EINVAL, "%s.pid: must be a pid", where);
        return check_size(where, size_name, size, err);
}

/* A fork token's clone (memd/methods-shim.c): regions a restarted memd
 * frees (the token died with the last memd). */
static int parse_clone(json_object *o, size_t i, struct state_process *p, struct xmem_error *err)
{
        struct state_clone_in in = {};
        char where[32];
        int r;

        snprintf(where, sizeof(where), "fork_clones[%zu]", i);
        r = json_dispatch_at(o, clone_fields, &in, sizeof(in), false, where, err);
        if (r >= 0)
                r = check_size(where, "arena_size", in.arena_size, err);
        if (r < 0)
                return r;
        p->arena_size = in.arena_size;
        return parse_regions(in.regions, where, p, err);
}

static int parse_clones(json_object *arr, struct state_container *s, struct xmem_error *err)
{
        size_t n;
        int r;

        if (!arr)
                return 0;
        if (!json_object_is_type(arr, json_type_array))
                return xmem_error_set(err, -EINVAL, "fork_clones: must be an array");
        n = json_object_array_length(arr);
        if (n > 4096)
                return xmem_error_set(err, -EINVAL, "fork_clones: more than 4096");
        s->clones = calloc(n ?: 1, sizeof(*s->clones));
        if (!s->clones)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                r = parse_clone(json_object_array_get_idx(arr, i), i, &s->clones[i], err);
                if (r < 0)
                        return r;
        }
        s->n_clones = n;
        return 0;
}

static int parse_process(json_object *o, size_t i, struct state_process *p, struct xmem_error *err)
{
        struct state_proc_in in = {};
        char where[32];
        int r;

        snprintf(where, sizeof(where), "processes[%zu]", i);
        r = json_dispatch_at(o, proc_fields, &in, sizeof(in), false, where, err);
        if (r < 0)
                return r;
        r = state_check_arena(where, in.pid, "arena_size", in.arena_size, err);
        if (r < 0)
                return r;
        if (in.acct_slot >= XMEM_ACCT_SLOTS)
                return xmem_error_set(err, -EINVAL, "%s.acct_slot: must be below %d", where,
                                      (int)XMEM_ACCT_SLOTS);
        p->pid = (pid_t)in.pid;
        p->start_time = in.start_time;
        p->arena_size = in.arena_size;
        p->memfd_ino = in.memfd_ino;
        p->acct_slot = (uint32_t)in.acct_slot;
        return parse_regions(in.regions, where, p, err);
}

int state_parse(const char *buf, size_t len, struct state_container *ret, struct xmem_error *err)
{
        _cleanup_json_ json_object *root = NULL;
        struct state_container s = {};
        struct state_top t = {};
        size_t n;
        int r;

        r = json_parse(buf, len, &root, err);
        if (r < 0)
                return r;
        r = json_dispatch(root, top_fields, &t, sizeof(t), false, err);
        if (r < 0)
                return r;
        if (t.version != STATE_VERSION)
                return xmem_error_set(err, -EPROTONOSUPPORT, "xmem_state: version %llu, not %d",
                                      (unsigned long long)t.version, STATE_VERSION);
        s.attach = (struct api_attach){.id = t.id,
                                       .cgroup = t.cgroup,
                                       .local_limit = t.local_limit,
                                       .external = t.external,
                                       .external_max = t.external_max,
                                       .policy_text = t.policy,
                                       .local_alloc_limit = t.local_alloc_limit,
                                       .appliance = t.appliance,
                                       .file_dir = t.file_dir};
        /* the same checks as an attach request */
        r = api_attach_validate(&s.attach, err);
        if (r < 0)
                return r;
        if (t.chunk_size < 4096 || t.chunk_size > (2U << 20) || (t.chunk_size & (t.chunk_size - 1)))
                return xmem_error_set(err, -EINVAL, "chunk_size: must be a power of two, 4K..2M");
        s.chunk_size = (uint32_t)t.chunk_size;
        if (!json_object_is_type(t.processes, json_type_array))
                return xmem_error_set(err, -EINVAL, "processes: must be an array");
        n = json_object_array_length(t.processes);
        if (n > 4096)
                return xmem_error_set(err, -EINVAL, "processes: more than 4096");
        s.processes = calloc(n ?: 1, sizeof(*s.processes));
        if (!s.processes)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                r = parse_process(json_object_array_get_idx(t.processes, i), i, &s.processes[i],
                                  err);
                for (size_t j = 0; r >= 0 && j < i; j++)
                        if (s.processes[j].pid == s.processes[i].pid)
                                r = xmem_error_set(err, -EINVAL, "processes[%zu].pid: %d twice", i,
                                                   (int)s.processes[i].pid);
                if (r < 0) {
                        free(s.processes);
                        return r;
                }
        }
        s.n_processes = n;
        s.acct_ino = t.acct_ino;
        r = parse_clones(t.fork_clones, &s, err);
        if (r < 0) {
                free(s.processes);
                free(s.clones);
                return r;
        }
        s.json_ = TAKE_PTR(root);
        *ret = s;
        return 0;
}

void state_container_done(struct state_container *s)
{
        free(s->processes);
        free(s->clones);
        if (s->json_)
                json_object_put(s->json_);
        *s = (struct state_container){};
}

/* ---- the directory ---- */

int state_open(struct manager *m, struct xmem_error *err)
{
        const char *dir = m->cfg.state_dir ?: MANAGER_DEFAULT_STATE_DIR;
        int fd;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return xmem_error_set(err, negative_errno(), "state directory %s: %m", dir);
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return xmem_error_set(err, negative_errno(), "state directory %s: %m", dir);
        m->state_lockfd = fd;
        /* two memds on one state directory would each adopt the other's containers */
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                return xmem_error_set(
                    err, errno == EWOULDBLOCK ? -EBUSY : negative_errno(), "state directory %s: %s",
                    dir, errno == EWOULDBLOCK ? "in use by another memd" : strerror(errno));
        if (mkdirat(fd, STATE_SUBDIR, 0700) < 0 && errno != EEXIST)
                return xmem_error_set(err, negative_errno(), "%s/" STATE_SUBDIR ": %m", dir);
        m->state_dirfd = openat(fd, STATE_SUBDIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (m->state_dirfd < 0)
                return xmem_error_set(err, negative_errno(), "%s/" STATE_SUBDIR ": %m", dir);
        /* checkpoints' manifests (memd/manifest.c) */
        if (mkdirat(fd, STATE_SNAPSHOTS, 0700) < 0 && errno != EEXIST)
                return xmem_error_set(err, negative_errno(), "%s/" STATE_SNAPSHOTS ": %m", dir);
        m->snap_dirfd =
            openat(fd, STATE_SNAPSHOTS, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (m->snap_dirfd < 0)
                return xmem_error_set(err, negative_errno(), "%s/" STATE_SNAPSHOTS ": %m", dir);
        return 0;
}

void state_close(struct manager *m)
{
        m->state_dirfd = safe_close(m->state_dirfd);
        m->snap_dirfd = safe_close(m->snap_dirfd);
        m->state_lockfd = safe_close(m->state_lockfd);
}

const char *state_appliance_name(const struct manager *m, const struct xmem_transport *t)
{
        for (size_t i = 0; i < m->n_transports; i++)
                if (m->transports[i] == t)
                        return m->cfg.appliances[i];
        return xmem_transport_uri((struct xmem_transport *)t);
}

static json_object *u64(uint64_t v)
{
        return json_object_new_int64((int64_t)MIN(v, (uint64_t)INT64_MAX));
}

json_object *state_region_json(const char *appliance, const struct xmem_region_ref *ref)
{
        json_object *r = json_object_new_object();
        char key[2 * XMEM_KEY_SIZE + 1];

        for (size_t k = 0; k < XMEM_KEY_SIZE; k++)
                snprintf(key + 2 * k, 3, "%02x", ref->key[k]);
        json_object_object_add(r, "appliance", json_object_new_string(appliance));
        json_object_object_add(r, "id", u64(ref->id));
        json_object_object_add(r, "key", json_object_new_string(key));
        return r;
}

struct xmem_transport *state_transport_of(const struct manager *m, const char *uri)
{
        for (size_t i = 0; i < m->n_transports; i++)
                if (strcmp(uri, m->cfg.appliances[i]) == 0 ||
                    strcmp(uri, xmem_transport_uri(m->transports[i])) == 0)
                        return m->transports[i];
        return NULL;
}

static json_object *regions_to_json(const struct manager *m, const struct store *s)
{
        json_object *regs = json_object_new_array();
        struct xmem_transport *const *ts;
        const struct xmem_region_ref *refs;
        size_t n = store_xmem_regions(s, &ts, &refs);

        for (size_t i = 0; i < n; i++)
                json_object_array_add(regs,
                                      state_region_json(state_appliance_name(m, ts[i]), &refs[i]));
        return regs;
}

static json_object *process_to_json(const struct manager *m, const struct process *p)
{
        json_object *o = json_object_new_object();

        json_object_object_add(o, "pid", u64((uint64_t)p->pid));
        json_object_object_add(o, "start_time", u64(p->start_time));
        json_object_object_add(o, "arena_size", u64(p->store->size));
        json_object_object_add(o, "memfd_ino", u64(p->memfd_ino));
        json_object_object_add(o, "acct_slot", u64(p->acct_slot));
        json_object_object_add(o, "regions", regions_to_json(m, p->store));
        return o;
}

/* C's fork tokens' clones not claimed yet: a restarted memd frees them. */
static json_object *clones_to_json(const struct manager *m, const struct container *c)
{
        json_object *arr = json_object_new_array();

        for (const struct fork_token *t = m->tokens; t; t = t->next)
                if (t->container == c && t->store) {
                        json_object *o = json_object_new_object();
                        json_object_object_add(o, "arena_size", u64(t->store->size));
                        json_object_object_add(o, "regions", regions_to_json(m, t->store));
                        json_object_array_add(arr, o);
                }
        return arr;
}

static json_object *container_state_json(const struct manager *m, const struct container *c)
{
        json_object *o = json_object_new_object(), *procs = json_object_new_array();
        char pol[32];

        json_object_object_add(o, "xmem_state", u64(STATE_VERSION));
        json_object_object_add(o, "id", json_object_new_string(c->id));
        json_object_object_add(o, "cgroup", json_object_new_string(c->cgroup_dir));
        json_object_object_add(o, "local_limit", u64(c->local_limit));
        json_object_object_add(o, "external", u64(c->external));
        json_object_object_add(o, "external_max", u64(c->arena_size));
        json_object_object_add(o, "local_alloc_limit", u64(c->local_alloc_limit));
        json_object_object_add(
            o, "policy", json_object_new_string(api_policy_format(&c->policy, pol, sizeof(pol))));
        if (c->appliance)
                json_object_object_add(o, "appliance", json_object_new_string(c->appliance));
        if (c->file_dir)
                json_object_object_add(o, "file_dir", json_object_new_string(c->file_dir));
        json_object_object_add(o, "chunk_size", u64(c->chunk_size));
        for (const struct process *p = c->processes; p; p = p->next)
                json_object_array_add(procs, process_to_json(m, p));
        json_object_object_add(o, "processes", procs);
        json_object_object_add(o, "fork_clones", clones_to_json(m, c));
        /* the page the resumed shims charge, until this memd has it back */
        json_object_object_add(o, "acct_ino", u64(c->acct_awaiting_ino ?: c->acct_ino));
        return o;
}

static int write_all(int fd, const char *s, size_t len)
{
        while (len > 0) {
                ssize_t n = write(fd, s, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                s += n;
                len -= (size_t)n;
        }
        return 0;
}

int state_write_json(int dirfd, const char *stem, json_object *o, struct xmem_error *err)
{
        char name[API_ID_MAX + 16], tmp[API_ID_MAX + 24];
        const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        int fd, r;

        snprintf(name, sizeof(name), "%s.json", stem);
        snprintf(tmp, sizeof(tmp), ".%s.json.tmp", stem);
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return xmem_error_set(err, negative_errno(), "state file %s: %m", tmp);
        r = write_all(fd, text, strlen(text));
        if (r >= 0 && fsync(fd) < 0)
                r = negative_errno();
        close(fd);
        if (r >= 0 && renameat(dirfd, tmp, dirfd, name) < 0)
                r = negative_errno();
        if (r >= 0 && fsync(dirfd) < 0)
                r = negative_errno();
        if (r < 0) {
                (void)unlinkat(dirfd, tmp, 0);
                return xmem_error_set(err, r, "state file %s: %s", name, strerror(-r));
        }
        return 0;
}

int state_save(struct manager *m, const struct container *c, struct xmem_error *err)
{
        _cleanup_json_ json_object *o = NULL;

        if (m->state_dirfd < 0)
                return 0;
        o = container_state_json(m, c);
        return state_write_json(m->state_dirfd, c->id, o, err);
}

int state_read_file(int dirfd, const char *name, char **ret, size_t *ret_len,
                    struct xmem_error *err)
{
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        char *buf;
        size_t got = 0;

        if (fd < 0 || fstat(fd, &st) < 0)
                return xmem_error_set(err, negative_errno(), "%m");
        if (!S_ISREG(st.st_mode) || st.st_size > STATE_MAX_FILE)
                return xmem_error_set(err, -EINVAL, "not a regular file of at most %u bytes",
                                      STATE_MAX_FILE);
        buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        while (got < (size_t)st.st_size) {
                ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
                if (k <= 0) {
                        free(buf);
                        return xmem_error_set(err, k < 0 ? negative_errno() : -EIO, "short read");
                }
                got += (size_t)k;
        }
        buf[got] = 0;
        *ret = buf;
        *ret_len = got;
        return 0;
}

int state_remove(struct manager *m, const struct container *c)
{
        char name[API_ID_MAX + 16];

        if (m->state_dirfd < 0)
                return 0;
        snprintf(name, sizeof(name), "%s.json", c->id);
        if (unlinkat(m->state_dirfd, name, 0) < 0 && errno != ENOENT)
                return negative_errno();
        return fsync(m->state_dirfd) < 0 ? negative_errno() : 0;
}

void state_move_aside(struct manager *m, const char *name, const char *why)
{
        const char *dir = m->cfg.state_dir ?: MANAGER_DEFAULT_STATE_DIR;
        char aside[512];

        snprintf(aside, sizeof(aside), "%s.bad", name);
        if (renameat(m->state_dirfd, name, m->state_dirfd, aside) < 0) {
                log_error("state file %s/" STATE_SUBDIR "/%s: %s (and moving it aside: %m)", dir,
                          name, why);
                return;
        }
        (void)fsync(m->state_dirfd);
        log_error("state file %s/" STATE_SUBDIR "/%s: %s; moved aside to %s", dir, name, why,
                  aside);
}

int state_proc_start_time(pid_t pid, uint64_t *ret)
{
        char path[64], buf[1024], *p;
        unsigned long long v;
        ssize_t n;
        int fd;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ESRCH : negative_errno();
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return -ESRCH;
        buf[n] = 0;
        /* after the command's closing parenthesis: field 3 onwards */
        p = strrchr(buf, ')');
        if (!p)
                return -EIO;
        for (int field = 3; field <= 22; field++) {
                p = strchr(p + 1, ' ');
                if (!p)
                        return -EIO;
        }
        if (sscanf(p, " %llu", &v) != 1)
                return -EIO;
        *ret = v;
        return 0;
}
