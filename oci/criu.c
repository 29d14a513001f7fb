/* criu.c: xmem-runtime's checkpoint and restore of xmem containers (criu.h):
 * memd snapshots the external memory next to CRIU's image of the process
 * state; a restore of such an image is refused with what to do instead. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "criu.h"
#include "json-util.h"
#include "macro.h"
#include "memd-client.h"
#include "paths.h"

#define DEFAULT_IMAGE_PATH "checkpoint" /* runc's */

static const char *image_dir(const struct runtime_args *a)
{
        return a->image_path ?: DEFAULT_IMAGE_PATH;
}

static int write_name(const char *dir, const char *name, struct xmem_error *err)
{
        char path[4096];
        _cleanup_close_ int fd = -1;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return xmem_error_set(err, -errno, "image path %s: %m", dir);
        snprintf(path, sizeof(path), "%s/" CRIU_SNAPSHOT_FILE, dir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || dprintf(fd, "%s\n", name) < 0 || fsync(fd) < 0)
                return xmem_error_set(err, -errno, "%s: %m", path);
        return 0;
}

int criu_checkpoint_external(const struct runtime_args *a, struct xmem_error *err)
{
        _cleanup_json_ json_object *res = NULL;
        json_object *p;
        _cleanup_close_ int fd = -1;
        struct timespec now;
        char name[160];
        int r;

        if (!a->id)
                return 0; /* runc says what is missing */
        r = memd_connect(xmem_host_socket(), 0, &fd, err);
        if (r < 0)
                return 0; /* no memd: no xmem container to take along */
        clock_gettime(CLOCK_REALTIME, &now);
        snprintf(name, sizeof(name), "%.100s-criu-%lld", a->id,
                 (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        p = json_object_new_object();
        json_object_object_add(p, "id", json_object_new_string(a->id));
        json_object_object_add(p, "name", json_object_new_string(name));
        r = memd_call(fd, "checkpoint", p, &res, err);
        if (r == -ENOENT && strstr(err->msg, "no container")) {
                *err = (struct xmem_error){};
                return 0; /* not an xmem container */
        }
        if (r < 0)
                return xmem_error_prefix(err, "checkpoint %s: external memory", a->id);
        return write_name(image_dir(a), name, err);
}

int criu_restore_check(const struct runtime_args *a, struct xmem_error *err)
{
        char path[4096], name[160] = "";
        FILE *f;

        snprintf(path, sizeof(path), "%s/" CRIU_SNAPSHOT_FILE, image_dir(a));
        f = fopen(path, "re");
        if (!f)
                return 0;
        if (!fgets(name, sizeof(name), f))
                name[0] = 0;
        fclose(f);
        name[strcspn(name, "\n")] = 0;
        return xmem_error_set(err, -EOPNOTSUPP,
                              "restore %s: the image holds external memory (snapshot %s): CRIU "
                              "cannot restore a process with a userfaultfd; start a new "
                              "container with io.xmem.restore=%s instead",
                              a->id ?: "", name, name);
}
