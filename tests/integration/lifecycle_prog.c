/* lifecycle_prog.c: test_lifecycle's verifying workload, run in a container
 * under the shim (never instrumented). Takes MIB 1 MiB blocks from malloc
 * (beyond the local limit: the external arena), writes generation 0 over
 * every word and prints "ready ext=E local=L" (how many blocks lie in the
 * shim's arena mapping, how many in local memory); then serves one command
 * per stdin line, answering one line each (flushed):
 *   write G   every word of generation G            -> "wrote G"
 *   check G   every word is generation G's          -> "ok G" | "bad G N" (N wrong words)
 *   xcheck G  the same for the arena's blocks only  -> "ok G" | "bad G N"
 *   dirty G K the first K MiB get generation G      -> "dirtied G K"
 *   exit                                             -> exits 0 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK (1UL << 20)

static uint64_t word(uint64_t off, uint64_t gen)
{
        uint64_t x = (off * 0x9e3779b97f4a7c15ULL) ^ ((gen + 1) * 0xbf58476d1ce4e5b9ULL);
        return x ^ (x >> 31);
}

static bool *in_arena; /* block b lies in the shim's arena mapping ("xmem-arena") */

static void find_arena_blocks(uint64_t **blocks, uint64_t n, uint64_t *ret_ext)
{
        FILE *f = fopen("/proc/self/maps", "r");
        char line[512];

        *ret_ext = 0;
        while (f && fgets(line, sizeof(line), f)) {
                unsigned long lo, hi;
                if (!strstr(line, "xmem-arena") || sscanf(line, "%lx-%lx", &lo, &hi) != 2)
                        continue;
                for (uint64_t b = 0; b < n; b++)
                        if ((unsigned long)blocks[b] >= lo &&
                            (unsigned long)blocks[b] + BLOCK <= hi && !in_arena[b]) {
                                in_arena[b] = true;
                                (*ret_ext)++;
                        }
        }
        if (f)
                fclose(f);
}

static void write_gen(uint64_t **blocks, uint64_t n, uint64_t gen)
{
        for (uint64_t b = 0; b < n; b++)
                for (uint64_t k = 0; k < BLOCK / 8; k++)
                        blocks[b][k] = word(b * BLOCK + k * 8, gen);
}

static uint64_t check_gen(uint64_t **blocks, uint64_t n, uint64_t gen, bool arena_only)
{
        uint64_t bad = 0;

        for (uint64_t b = 0; b < n; b++)
                for (uint64_t k = 0; k < BLOCK / 8 && (in_arena[b] || !arena_only); k++)
                        bad += blocks[b][k] != word(b * BLOCK + k * 8, gen);
        return bad;
}

int main(int argc, char **argv)
{
        uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 0, **blocks, g, k, ext;
        char line[128];

        if (mib == 0 || !(blocks = calloc(mib, sizeof(*blocks))) ||
            !(in_arena = calloc(mib, sizeof(*in_arena))))
                return 64;
        for (uint64_t b = 0; b < mib; b++)
                if (!(blocks[b] = malloc(BLOCK))) {
                        printf("malloc failed at %llu MiB\n", (unsigned long long)b);
                        return 3;
                }
        write_gen(blocks, mib, 0);
        find_arena_blocks(blocks, mib, &ext);
        printf("ready ext=%llu local=%llu\n", (unsigned long long)ext,
               (unsigned long long)(mib - ext));
        fflush(stdout);
        while (fgets(line, sizeof(line), stdin)) {
                if (sscanf(line, "write %llu", (unsigned long long *)&g) == 1) {
                        write_gen(blocks, mib, g);
                        printf("wrote %llu\n", (unsigned long long)g);
                } else if (sscanf(line, "check %llu", (unsigned long long *)&g) == 1 ||
                           sscanf(line, "xcheck %llu", (unsigned long long *)&g) == 1) {
                        uint64_t bad = check_gen(blocks, mib, g, line[0] == 'x');
                        if (bad)
                                printf("bad %llu %llu\n", (unsigned long long)g,
                                       (unsigned long long)bad);
                        else
                                printf("ok %llu\n", (unsigned long long)g);
                } else if (sscanf(line, "dirty %llu %llu", (unsigned long long *)&g,
                                  (unsigned long long *)&k) == 2) {
                        write_gen(blocks, k < mib ? k : mib, g);
                        printf("dirtied %llu %llu\n", (unsigned long long)g, (unsigned long long)k);
                } else if (strncmp(line, "exit", 4) == 0)
                        return 0;
                else
                        printf("unknown command\n");
                fflush(stdout);
        }
        return 0;
}
