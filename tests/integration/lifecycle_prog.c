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
 *   sample G  the first and last word of each arena block -> "ok G" | "bad G N"
 *   root      names the block directory "lifecycle" (xmem_root_set) -> "root R"
 *   grow K    K more blocks of generation 0      -> "grew K" | "grow refused after N"
 *             (all or none: the N it got are freed again)
 *   exit                                             -> exits 0
 * "lifecycle_prog restored" starts from a snapshot instead: it finds the
 * block directory with xmem_root_get("lifecycle") (else prints "no root",
 * exits 5) and prints "restored ext=E local=L"; its local blocks were not in
 * the snapshot and are never touched (only xcheck and sample). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xmem/xmem.h>

#define BLOCK (1UL << 20)
#define DIR_MAGIC 0x524944454c4358ULL

/* The block directory: itself a 1 MiB block (so it lies in the arena), the
 * root a restored process starts from. */
struct dir {
        uint64_t magic, mib;
        uint64_t *blocks[];
};
#define DIR_MAX ((BLOCK - sizeof(struct dir)) / sizeof(uint64_t *))

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

/* Does [P, P+LEN) lie in the arena mapping? */
static bool addr_in_arena(const void *p, size_t len)
{
        FILE *f = fopen("/proc/self/maps", "r");
        char line[512];
        bool in = false;

        while (f && !in && fgets(line, sizeof(line), f)) {
                unsigned long lo, hi;
                in = strstr(line, "xmem-arena") && sscanf(line, "%lx-%lx", &lo, &hi) == 2 &&
                     (unsigned long)p >= lo && (unsigned long)p + len <= hi;
        }
        if (f)
                fclose(f);
        return in;
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

static int64_t sample_gen(uint64_t **blocks, uint64_t n, uint64_t gen)
{
        uint64_t bad = 0, last = BLOCK / 8 - 1;

        for (uint64_t b = 0; b < n; b++)
                if (in_arena[b])
                        bad += (blocks[b][0] != word(b * BLOCK, gen)) +
                               (blocks[b][last] != word(b * BLOCK + last * 8, gen));
        return (int64_t)bad;
}

static struct dir *start(int argc, char **argv)
{
        uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 0, ext;
        struct dir *d;

        if (argc > 1 && strcmp(argv[1], "restored") == 0) {
                d = xmem_available() ? xmem_root_get("lifecycle") : NULL;
                if (!d || d->magic != DIR_MAGIC || !(in_arena = calloc(DIR_MAX, sizeof(bool)))) {
                        printf("no root\n");
                        exit(5);
                }
                find_arena_blocks(d->blocks, d->mib, &ext);
                printf("restored ext=%llu local=%llu\n", (unsigned long long)ext,
                       (unsigned long long)(d->mib - ext));
                return d;
        }
        if (mib == 0 || mib > DIR_MAX || !(d = malloc(BLOCK)) ||
            !(in_arena = calloc(DIR_MAX, sizeof(*in_arena))))
                exit(64);
        /* the allocator's first block may be local: the directory must be in
         * the arena, where a snapshot keeps it */
        for (int tries = 0; tries < 4 && !addr_in_arena(d, BLOCK); tries++)
                if (!(d = malloc(BLOCK)))
                        exit(3);
        d->magic = DIR_MAGIC;
        d->mib = mib;
        for (uint64_t b = 0; b < mib; b++)
                if (!(d->blocks[b] = malloc(BLOCK))) {
                        printf("malloc failed at %llu MiB\n", (unsigned long long)b);
                        exit(3);
                }
        write_gen(d->blocks, mib, 0);
        find_arena_blocks(d->blocks, mib, &ext);
        printf("ready ext=%llu local=%llu\n", (unsigned long long)ext,
               (unsigned long long)(mib - ext));
        return d;
}

/* K more blocks of generation 0, all or none. */
static void grow(struct dir *d, uint64_t k)
{
        uint64_t got = 0, ext;

        for (; got < k && d->mib + got < DIR_MAX; got++) {
                uint64_t b = d->mib + got, *p = malloc(BLOCK);
                if (!p)
                        break;
                d->blocks[b] = p;
                for (uint64_t w = 0; w < BLOCK / 8; w++)
                        p[w] = word(b * BLOCK + w * 8, 0);
        }
        if (got < k) {
                printf("grow refused after %llu\n", (unsigned long long)got);
                while (got > 0)
                        free(d->blocks[d->mib + --got]);
                return;
        }
        d->mib += k;
        find_arena_blocks(d->blocks, d->mib, &ext);
        printf("grew %llu\n", (unsigned long long)k);
}

int main(int argc, char **argv)
{
        struct dir *d = start(argc, argv);
        uint64_t **blocks = d->blocks, g, k;
        char line[128];

        fflush(stdout);
        while (fgets(line, sizeof(line), stdin)) {
                if (sscanf(line, "write %llu", (unsigned long long *)&g) == 1) {
                        write_gen(blocks, d->mib, g);
                        printf("wrote %llu\n", (unsigned long long)g);
                } else if (sscanf(line, "check %llu", (unsigned long long *)&g) == 1 ||
                           sscanf(line, "xcheck %llu", (unsigned long long *)&g) == 1 ||
                           sscanf(line, "sample %llu", (unsigned long long *)&g) == 1) {
                        uint64_t bad = line[0] == 's'
                                           ? (uint64_t)sample_gen(blocks, d->mib, g)
                                           : check_gen(blocks, d->mib, g, line[0] == 'x');
                        if (bad)
                                printf("bad %llu %llu\n", (unsigned long long)g,
                                       (unsigned long long)bad);
                        else
                                printf("ok %llu\n", (unsigned long long)g);
                } else if (sscanf(line, "dirty %llu %llu", (unsigned long long *)&g,
                                  (unsigned long long *)&k) == 2) {
                        write_gen(blocks, k < d->mib ? k : d->mib, g);
                        printf("dirtied %llu %llu\n", (unsigned long long)g, (unsigned long long)k);
                } else if (sscanf(line, "grow %llu", (unsigned long long *)&k) == 1) {
                        grow(d, k);
                } else if (strncmp(line, "root", 4) == 0) {
                        printf("root %d\n", xmem_available() ? xmem_root_set("lifecycle", d) : -38);
                } else if (strncmp(line, "exit", 4) == 0)
                        return 0;
                else
                        printf("unknown command\n");
                fflush(stdout);
        }
        return 0;
}
