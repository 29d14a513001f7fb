/* container_fill.c: the container tests' payload: malloc N MiB in 1 MiB
 * blocks, write a pattern over every page, read it all back, print the
 * result; optionally stay alive S seconds afterwards (killed by the test),
 * reading it all back once more at the end with a third argument "verify". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK (1UL << 20)

static uint64_t word(size_t block, size_t i)
{
        return ((uint64_t)block << 32) ^ (i * 0x9e3779b97f4a7c15ULL);
}

int main(int argc, char **argv)
{
        size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
        unsigned hold = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 0;
        uint64_t **blocks = calloc(mib, sizeof(*blocks));

        if (!blocks)
                return 3;
        for (size_t b = 0; b < mib; b++) {
                blocks[b] = malloc(BLOCK);
                if (!blocks[b]) {
                        printf("malloc failed at %zu MiB\n", b);
                        return 3;
                }
                for (size_t i = 0; i < BLOCK / 8; i++)
                        blocks[b][i] = word(b, i);
        }
        for (int pass = 0; pass < (argc > 3 && !strcmp(argv[3], "verify") ? 2 : 1); pass++) {
                if (pass)
                        sleep(hold);
                for (size_t b = 0; b < mib; b++)
                        for (size_t i = 0; i < BLOCK / 8; i++)
                                if (blocks[b][i] != word(b, i)) {
                                        printf("MISMATCH at MiB %zu word %zu\n", b, i);
                                        return 2;
                                }
                printf("fill-ok%s %zu MiB\n", pass ? " again" : "", mib);
                fflush(stdout);
        }
        if (hold && !(argc > 3 && !strcmp(argv[3], "verify")))
                sleep(hold);
        return 0;
}
