/* fuzz_state.c: memd's state file parser (memd/state.c state_parse): never
 * crash; a refusal says why; an accepted file has every field in range. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xmem/acct.h>

#include "state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct state_container s = {};
        struct xmem_error err = {};

        if (state_parse((const char *)data, size, &s, &err) < 0) {
                assert(err.msg[0]);
                return 0;
        }
        assert(api_id_valid(s.attach.id));
        assert(s.chunk_size >= 4096 && !(s.chunk_size & (s.chunk_size - 1)));
        for (size_t i = 0; i < s.n_processes; i++) {
                const struct state_process *p = &s.processes[i];
                assert(p->pid > 0 && p->arena_size > 0 && p->arena_size % 4096 == 0);
                assert(p->n_regions >= 1 && p->n_regions <= MANAGER_MAX_APPLIANCES);
                assert(p->acct_slot < XMEM_ACCT_SLOTS);
                for (size_t k = 0; k < p->n_regions; k++)
                        assert(p->regions[k].ref.id && p->regions[k].appliance[0]);
        }
        state_container_done(&s);
        return 0;
}
