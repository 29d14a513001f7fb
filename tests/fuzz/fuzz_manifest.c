/* fuzz_manifest.c: a checkpoint's manifest parser (memd/manifest.c
 * manifest_parse): never crash; a refusal says why; an accepted manifest has
 * every field in range, and writing it out and parsing it again gives the
 * same manifest. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct manifest *m)
{
        assert(manifest_name_valid(m->name) && api_id_valid(m->attach.id));
        assert(m->chunk_size >= 4096 && !(m->chunk_size & (m->chunk_size - 1)));
        assert(m->n_arenas >= 1 && m->n_arenas <= MANIFEST_MAX_ARENAS);
        for (size_t i = 0; i < m->n_arenas; i++) {
                const struct manifest_arena *a = &m->arenas[i];
                uint64_t end = 0;

                assert(a->pid > 0 && a->size > 0 && a->size % 4096 == 0);
                assert(a->base && a->base % 4096 == 0 && a->base + a->size <= MANIFEST_MAX_ADDR);
                assert(a->n_regions >= 1 && a->n_regions <= MANAGER_MAX_APPLIANCES);
                for (size_t k = 0; k < a->n_regions; k++)
                        assert(a->regions[k].snap.id && a->regions[k].source &&
                               a->regions[k].appliance[0]);
                for (size_t k = 0; k < a->n_extents; k++) {
                        const struct manifest_extent *e = &a->extents[k];
                        assert(e->offset >= end && e->len && e->offset + e->len <= a->size);
                        end = e->offset + e->len;
                }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct manifest m = {}, again = {};
        struct xmem_error err = {};
        json_object *o;
        const char *text;

        if (manifest_parse((const char *)data, size, &m, &err) < 0) {
                assert(err.msg[0]);
                return 0;
        }
        check(&m);
        o = manifest_to_json(&m);
        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        assert(manifest_parse(text, strlen(text), &again, &err) == 0);
        assert(again.n_arenas == m.n_arenas && strcmp(again.name, m.name) == 0);
        for (size_t i = 0; i < m.n_arenas; i++)
                assert(again.arenas[i].n_extents == m.arenas[i].n_extents &&
                       again.arenas[i].base == m.arenas[i].base);
        manifest_done(&again);
        json_object_put(o);
        manifest_done(&m);
        return 0;
}
