/* replay.c: runs a fuzz target's LLVMFuzzerTestOneInput over every file of a
 * corpus directory, so the corpus is exercised by ordinary (gcc) test runs. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
        struct dirent *de;
        unsigned n = 0;
        DIR *d;

        if (argc != 2) {
                fprintf(stderr, "usage: %s CORPUS-DIR\n", argv[0]);
                return 2;
        }
        d = opendir(argv[1]);
        if (!d) {
                perror(argv[1]);
                return 1;
        }
        while ((de = readdir(d))) {
                char path[4096];
                uint8_t *buf;
                long len;
                FILE *f;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "%s/%s", argv[1], de->d_name);
                f = fopen(path, "rb");
                if (!f)
                        continue;
                fseek(f, 0, SEEK_END);
                len = ftell(f);
                fseek(f, 0, SEEK_SET);
                buf = malloc(len > 0 ? (size_t)len : 1);
                if (buf && fread(buf, 1, (size_t)len, f) == (size_t)len) {
                        LLVMFuzzerTestOneInput(buf, (size_t)len);
                        n++;
                }
                free(buf);
                fclose(f);
        }
        closedir(d);
        printf("replayed %u inputs from %s\n", n, argv[1]);
        return n ? 0 : 1;
}
