/* fuzz_wire.c: the appliance frame decoders against arbitrary bytes. The
 * first byte picks the decoder; a header that decodes must re-encode to the
 * same bytes. AUTH frames go through the header decoder (case 0); case 5 is
 * the appliance's check of an AUTH proof: only the right mac passes. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct xmem_error err = { 0 };

        if (size < 1)
                return 0;
        uint8_t sel = data[0];
        data++;
        size--;
        switch (sel % 6) {
        case 0: {
                struct xmem_wire_hdr h;
                uint8_t again[XMEM_WIRE_HDR_SIZE];
                if (size < XMEM_WIRE_HDR_SIZE)
                        return 0;
                if (wire_hdr_decode(data, sel & 0x80, &h, &err) == 0) {
                        wire_hdr_encode(&h, again);
                        assert(memcmp(again, data, XMEM_WIRE_HDR_SIZE) == 0);
                        assert(h.payload_len <= XMEM_WIRE_MAX_PAYLOAD);
                }
                break;
        }
        case 1: {
                size_t nseg = size / XMEM_WIRE_SEG_SIZE;
                struct xmem_wire_seg *segs;
                uint64_t total = 0;
                if (nseg == 0 || nseg > XMEM_WIRE_MAX_SEGS)
                        return 0;
                segs = malloc(nseg * sizeof(*segs));
                for (size_t i = 0; i < nseg; i++)
                        total += data[i * XMEM_WIRE_SEG_SIZE + 8];
                if (wire_segs_decode(data, nseg, total ? total : 1, segs, &err) == 0) {
                        uint64_t sum = 0;
                        for (size_t i = 0; i < nseg; i++)
                                sum += segs[i].length;
                        assert(sum == (total ? total : 1));
                }
                free(segs);
                break;
        }
        case 2: {
                struct xmem_wire_extent ext[64];
                size_t n;
                if (wire_extents_decode(data, size, ext, 64, &n, &err) == 0)
                        for (size_t i = 0; i < n; i++)
                                assert(ext[i].length > 0);
                break;
        }
        case 3: {
                struct xmem_wire_copy c;
                if (wire_copy_decode(data, size, &c, &err) == 0)
                        assert(memchr(c.dst_uri, 0, sizeof(c.dst_uri)));
                break;
        }
        case 4: {
                struct xmem_wire_hello h;
                if (wire_hello_decode(data, size, &h, &err) == 0)
                        assert(h.chunk_size >= 4096 && (h.chunk_size & (h.chunk_size - 1)) == 0);
                break;
        }
        case 5: {
                /* DATA: the server nonce, then a PROVE payload (client nonce, mac) */
                struct xmem_secret s = { .len = 16 };
                uint8_t want[XMEM_AUTH_MAC_SIZE];
                const uint8_t *sn = data, *prove = data + XMEM_AUTH_NONCE_SIZE;
                if (size != 2 * XMEM_AUTH_NONCE_SIZE + XMEM_AUTH_MAC_SIZE)
                        return 0;
                memcpy(s.bytes, "fuzzing secret!!", 16);
                assert(auth_mac(&s, false, sn, prove, want) == 0);
                assert(auth_mac_equal(want, prove + XMEM_AUTH_NONCE_SIZE) ==
                       (memcmp(want, prove + XMEM_AUTH_NONCE_SIZE, sizeof(want)) == 0));
                break;
        }
        }
        return 0;
}
