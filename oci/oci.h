/* oci.h: the OCI runtime state (a hook's stdin) and a bundle's config.json,
 * parsed strictly with json-c, and what xmem-runtime edits in config.json.
 * Pure functions: nothing here prints or touches a container. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "error.h"
#include "macro.h"

#define OCI_STATE_MAX (1U << 20)   /* a hook's stdin */
#define OCI_CONFIG_MAX (16U << 20) /* config.json */

/* The state JSON a runtime gives a hook on stdin (runtime-spec "State"). */
struct oci_state {
        json_object *doc;         /* owns the strings below */
        const char *oci_version;
        const char *id;
        const char *status;       /* creating, created, running, stopped */
        pid_t pid;                /* 0 when absent (poststop) */
        const char *bundle;       /* absolute path */
        json_object *annotations; /* borrowed from doc; NULL when absent */
};

int oci_state_parse(const char *text, size_t len, struct oci_state **ret, struct xmem_error *err);
void oci_state_free(struct oci_state *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct oci_state *, oci_state_free)

/* Annotations must be an object whose every value is a string (WHERE names it). */
int oci_check_annotations(json_object *an, const char *where, struct xmem_error *err);

/* A bundle's config.json: the fields xmem reads, checked for type; DOC keeps
 * everything else so that xmem-runtime writes it back unchanged. */
struct oci_config {
        json_object *doc;
        const char *root_path;     /* as written (may be relative to the bundle) */
        bool root_readonly;
        json_object *env;          /* process.env (array of "K=V"), NULL when absent */
        json_object *args;         /* process.args (array of strings), NULL when absent */
        json_object *mounts;       /* array, NULL when absent */
        json_object *hooks;        /* object, NULL when absent */
        json_object *annotations;  /* object of strings, NULL when absent */
        const char *cgroups_path;  /* linux.cgroupsPath, NULL when absent */
        uint64_t memory_limit;     /* linux.resources.memory.limit, 0 when absent or -1 */
};

int oci_config_parse(const char *text, size_t len, struct oci_config **ret,
                     struct xmem_error *err);
/* Read and parse BUNDLE/config.json. */
int oci_config_load(const char *bundle, struct oci_config **ret, struct xmem_error *err);
void oci_config_free(struct oci_config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct oci_config *, oci_config_free)

/* root.path made absolute against BUNDLE (malloc'd). */
int oci_config_rootfs(const struct oci_config *c, const char *bundle, char **ret);
/* The value of env NAME in process.env, or NULL. */
const char *oci_config_getenv(const struct oci_config *c, const char *name);
/* Set NAME=VALUE in process.env (replacing an existing NAME). */
int oci_config_setenv(struct oci_config *c, const char *name, const char *value);
/* True if a mount with this destination is already listed. */
bool oci_config_has_mount(const struct oci_config *c, const char *destination);
/* Append a bind mount SOURCE -> DESTINATION ("rbind" + ro/rw). */
int oci_config_add_bind(struct oci_config *c, const char *source, const char *destination,
                        bool readonly);
/* Append a hook {path, args} to hooks.STAGE unless one with PATH and the same
 * args is already there. ARGS is NULL-terminated. */
int oci_config_add_hook(struct oci_config *c, const char *stage, const char *path,
                        const char *const *args);
/* Serialise to BUNDLE/config.json atomically (temp file, fsync, rename). */
int oci_config_save(const struct oci_config *c, const char *bundle, struct xmem_error *err);
