/* top.c: xmemctl top: memd's containers sampled every interval (list, then
 * stats of each) and shown with rates: local limit, resident external pages,
 * external memory used, faults/s, MB/s in (fetched) and out (written back),
 * p99 fault latency. Refreshed in place on a terminal; one JSON object per
 * interval with --json. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json-util.h"
#include "macro.h"
#include "memd-client.h"
#include "parse.h"
#include "top.h"

struct top_row {
        char id[160];
        uint64_t local_limit, resident, ext_used, faults, fetched, written, p99_us;
};

struct top_sample {
        struct top_row *rows;
        size_t n;
        double at; /* CLOCK_MONOTONIC seconds */
};

static double now_s(clockid_t id)
{
        struct timespec t;

        clock_gettime(id, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t get_u64(json_object *o, const char *k)
{
        json_object *v;

        return json_object_object_get_ex(o, k, &v) && v ? (uint64_t)json_object_get_int64(v) : 0;
}

static int sample_one(int fd, const char *id, struct top_row *row, struct xmem_error *err)
{
        _cleanup_json_ json_object *st = NULL;
        json_object *params = json_object_new_object(), *lat = NULL;
        int r;

        json_object_object_add(params, "id", json_object_new_string(id));
        r = memd_call(fd, "stats", params, &st, err);
        if (r < 0)
                return r;
        snprintf(row->id, sizeof(row->id), "%s", id);
        row->local_limit = get_u64(st, "local_limit");
        row->resident = get_u64(st, "resident_bytes");
        row->ext_used = get_u64(st, "external_written_bytes");
        row->faults = get_u64(st, "faults");
        row->fetched = get_u64(st, "fetched_bytes");
        row->written = get_u64(st, "written_back_bytes");
        (void)json_object_object_get_ex(st, "fault_latency_us", &lat);
        row->p99_us = lat ? get_u64(lat, "p99") : 0;
        return 0;
}

/* Every container memd lists; one detached meanwhile is left out. */
static int sample(int fd, struct top_sample *s, struct xmem_error *err)
{
        _cleanup_json_ json_object *res = NULL;
        json_object *arr = NULL;
        size_t n;
        int r;

        r = memd_call(fd, "list", NULL, &res, err);
        if (r < 0)
                return r;
        (void)json_object_object_get_ex(res, "containers", &arr);
        n = arr ? json_object_array_length(arr) : 0;
        s->rows = calloc(n ?: 1, sizeof(*s->rows));
        if (!s->rows)
                return xmem_error_set(err, -ENOMEM, "out of memory");
        s->n = 0;
        for (size_t i = 0; i < n; i++) {
                json_object *id = NULL;
                (void)json_object_object_get_ex(json_object_array_get_idx(arr, i), "id", &id);
                r = id ? sample_one(fd, json_object_get_string(id), &s->rows[s->n], err) : -ENOENT;
                if (r == -ENOENT)
                        continue;
                if (r < 0)
                        return r;
                s->n++;
        }
        s->at = now_s(CLOCK_MONOTONIC);
        return 0;
}

static const struct top_row *find_row(const struct top_sample *s, const char *id)
{
        for (size_t i = 0; i < s->n; i++)
                if (strcmp(s->rows[i].id, id) == 0)
                        return &s->rows[i];
        return NULL;
}

/* (cur - prev) / dt, 0 for a container that was not there before (or a
 * counter that went back: memd restarted). */
static double rate(uint64_t cur, uint64_t prev, double dt)
{
        return cur >= prev && dt > 0 ? (double)(cur - prev) / dt : 0;
}

static void show(const struct top_sample *prev, const struct top_sample *cur, bool json, bool tty)
{
        double dt = cur->at - prev->at;
        json_object *o = json ? json_object_new_object() : NULL, *arr = NULL;
        char a[32], b[32], c[32];

        if (json) {
                arr = json_object_new_array();
                json_object_object_add(
                    o, "time_ms", json_object_new_int64((int64_t)(now_s(CLOCK_REALTIME) * 1e3)));
                json_object_object_add(o, "interval_s", json_object_new_double(dt));
        } else {
                if (tty)
                        printf("\033[H\033[2J");
                printf("%-24s %8s %9s %9s %10s %8s %8s %9s\n", "CONTAINER", "LOCAL", "RESIDENT",
                       "EXT-USED", "FAULTS/s", "IN-MB/s", "OUT-MB/s", "P99-us");
        }
        for (size_t i = 0; i < cur->n; i++) {
                const struct top_row *r = &cur->rows[i], *p = find_row(prev, r->id);
                struct top_row zero = *r;
                double faults, in, out;

                if (!p) { /* new: no rate yet */
                        zero.faults = zero.fetched = zero.written = 0;
                        p = &zero;
                }
                faults = rate(r->faults, p->faults, dt);
                in = rate(r->fetched, p->fetched, dt) / 1e6;
                out = rate(r->written, p->written, dt) / 1e6;
                if (!json) {
                        printf("%-24.24s %8s %9s %9s %10.0f %8.1f %8.1f %9" PRIu64 "\n", r->id,
                               format_size(a, sizeof(a), r->local_limit),
                               format_size(b, sizeof(b), r->resident),
                               format_size(c, sizeof(c), r->ext_used), faults, in, out, r->p99_us);
                        continue;
                }
                json_object *e = json_object_new_object();
                json_object_object_add(e, "id", json_object_new_string(r->id));
                json_object_object_add(e, "local_limit",
                                       json_object_new_int64((int64_t)r->local_limit));
                json_object_object_add(e, "resident_bytes",
                                       json_object_new_int64((int64_t)r->resident));
                json_object_object_add(e, "external_used_bytes",
                                       json_object_new_int64((int64_t)r->ext_used));
                json_object_object_add(e, "faults_per_s",
                                       json_object_new_double((double)(int64_t)(faults + 0.5)));
                json_object_object_add(e, "in_mb_per_s", json_object_new_double(in));
                json_object_object_add(e, "out_mb_per_s", json_object_new_double(out));
                json_object_object_add(e, "p99_fault_us",
                                       json_object_new_int64((int64_t)r->p99_us));
                json_object_array_add(arr, e);
        }
        if (json) {
                json_object_object_add(o, "containers", arr);
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                json_object_put(o);
        }
        fflush(stdout);
}

static int top_args(int argc, char **argv, double *interval, long *count)
{
        static const struct option opts[] = {
            {"interval", required_argument, NULL, 'i'},
            {"count", required_argument, NULL, 'c'},
            {},
        };
        char *end;
        int c;

        optind = 1;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                errno = 0;
                if (c == 'i') {
                        *interval = strtod(optarg, &end);
                        if (errno || *end || !(*interval >= 0.05 && *interval <= 3600)) {
                                fprintf(stderr,
                                        "xmemctl: top: --interval: must be seconds from "
                                        "0.05 to 3600, got '%s'\n",
                                        optarg);
                                return -EINVAL;
                        }
                } else if (c == 'c') {
                        *count = strtol(optarg, &end, 10);
                        if (errno || *end || *count < 1) {
                                fprintf(stderr,
                                        "xmemctl: top: --count: must be a positive "
                                        "number, got '%s'\n",
                                        optarg);
                                return -EINVAL;
                        }
                } else {
                        fprintf(stderr, "xmemctl: top: unknown option %s (see --help)\n",
                                argv[optind - 1]);
                        return -EINVAL;
                }
        }
        if (optind != argc) {
                fprintf(stderr, "xmemctl: top: takes no operand, got '%s'\n", argv[optind]);
                return -EINVAL;
        }
        return 0;
}

int ctl_top(const char *socket, bool json, int argc, char **argv)
{
        struct top_sample prev = {}, cur = {};
        struct xmem_error err = {};
        _cleanup_close_ int fd = -1;
        double interval = 1;
        long count = -1;
        bool tty = isatty(STDOUT_FILENO);
        int r;

        if (top_args(argc, argv, &interval, &count) < 0)
                return EXIT_FAILURE;
        r = memd_connect(socket, 10, &fd, &err);
        if (r >= 0)
                r = sample(fd, &prev, &err);
        for (long i = 0; r >= 0 && (count < 0 || i < count); i++) {
                struct timespec ts = {(time_t)interval,
                                      (long)((interval - (double)(time_t)interval) * 1e9)};
                nanosleep(&ts, NULL);
                r = sample(fd, &cur, &err);
                if (r < 0)
                        break;
                show(&prev, &cur, json, tty && !json);
                free(prev.rows);
                prev = cur;
                cur = (struct top_sample){};
        }
        free(prev.rows);
        free(cur.rows);
        if (r < 0) {
                fprintf(stderr, "xmemctl: top: %s\n", xmem_error_str(&err));
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}
