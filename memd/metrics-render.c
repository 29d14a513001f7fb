/* metrics-render.c: memd's metrics in the Prometheus text exposition format
 * (version 0.0.4): per container (label container="ID") its limits, resident
 * and external bytes, fault, eviction and byte counters and the fault
 * latency histogram; per appliance (label appliance="URI") its connections
 * and errors. Runs on the event loop, which alone changes the lists. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "macro.h"
#include "memd.h"
#include "metrics.h"
#include "residency.h"
#include "transport/transport.h"

/* The histogram's bounds: 2^10 ns (about 1 µs) to 2^35 ns (about 34 s). */
#define LAT_LE_FIRST 10
#define LAT_LE_LAST 35

struct ctr_metric {
        const char *name, *type, *help;
        uint64_t (*get)(const struct container *c);
};

static uint64_t counter(const _Atomic uint64_t *v)
{
        return atomic_load_explicit(v, memory_order_relaxed);
}

static uint64_t acct_load(const uint64_t *v)
{
        return __atomic_load_n(v, __ATOMIC_RELAXED);
}

static uint64_t get_local_limit(const struct container *c)
{
        return c->local_limit;
}
static uint64_t get_budget(const struct container *c)
{
        return counter(&c->residency->budget);
}
static uint64_t get_resident(const struct container *c)
{
        return counter(&c->residency->resident);
}
static uint64_t get_quota(const struct container *c)
{
        return c->external;
}
static uint64_t get_written(const struct container *c)
{
        return counter(&c->quota.used) * ARENA_PAGE_SIZE;
}
static uint64_t get_ext_alloc(const struct container *c)
{
        return acct_load(&c->acct->h.external_bytes);
}
static uint64_t get_local_alloc(const struct container *c)
{
        return acct_load(&c->acct->h.local_bytes);
}
static uint64_t get_processes(const struct container *c)
{
        return c->n_processes;
}
#define COUNTER_GETTER(field)                                                                      \
        static uint64_t get_##field(const struct container *c)                                     \
        {                                                                                          \
                return counter(&c->residency->counters.field);                                     \
        }
COUNTER_GETTER(faults)
COUNTER_GETTER(missing_faults)
COUNTER_GETTER(wp_faults)
COUNTER_GETTER(evictions)
COUNTER_GETTER(fetched_bytes)
COUNTER_GETTER(zero_filled_bytes)
COUNTER_GETTER(written_back_bytes)
COUNTER_GETTER(store_errors)
COUNTER_GETTER(sync_evictions)
static uint64_t get_quota_refused(const struct container *c)
{
        return counter(&c->quota.refused);
}

static const struct ctr_metric ctr_metrics[] = {
    {"xmem_container_local_limit_bytes", "gauge", "The container's local memory limit.",
     get_local_limit},
    {"xmem_container_budget_bytes", "gauge",
     "Resident external bytes the container may have now (limit less its own usage and "
     "headroom).",
     get_budget},
    {"xmem_container_resident_bytes", "gauge",
     "External memory of the container resident on the host.", get_resident},
    {"xmem_container_external_quota_bytes", "gauge", "The container's external memory quota.",
     get_quota},
    {"xmem_container_external_written_bytes", "gauge",
     "External memory the container's arenas have written (what counts against the quota).",
     get_written},
    {"xmem_container_external_allocated_bytes", "gauge",
     "External memory the container's processes hold allocated (their shims' count).",
     get_ext_alloc},
    {"xmem_container_local_allocated_bytes", "gauge",
     "Local memory the container's processes hold allocated (their shims' count).",
     get_local_alloc},
    {"xmem_container_processes", "gauge", "Processes of the container with an arena.",
     get_processes},
    {"xmem_container_faults_total", "counter", "Page faults served.", get_faults},
    {"xmem_container_missing_faults_total", "counter", "Faults on pages not resident.",
     get_missing_faults},
    {"xmem_container_write_protect_faults_total", "counter",
     "First writes to resident clean pages.", get_wp_faults},
    {"xmem_container_evictions_total", "counter", "Chunks evicted from the host.", get_evictions},
    {"xmem_container_sync_evictions_total", "counter",
     "Evictions a fill had to wait for (the hard limit).", get_sync_evictions},
    {"xmem_container_fetched_bytes_total", "counter", "Bytes read in from the appliances.",
     get_fetched_bytes},
    {"xmem_container_zero_filled_bytes_total", "counter", "Never-written pages installed as zeros.",
     get_zero_filled_bytes},
    {"xmem_container_written_back_bytes_total", "counter", "Bytes written out to the appliances.",
     get_written_back_bytes},
    {"xmem_container_store_errors_total", "counter", "Failed fetches and write-backs (retried).",
     get_store_errors},
    {"xmem_container_quota_refused_writes_total", "counter",
     "Writes refused over the external quota.", get_quota_refused},
};

/* A label value: backslash, double quote and newline escaped. */
static void put_label(FILE *f, const char *s)
{
        for (; *s; s++) {
                if (*s == '\\' || *s == '"')
                        fputc('\\', f);
                if (*s == '\n')
                        fputs("\\n", f);
                else
                        fputc(*s, f);
        }
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(FILE *f, const char *name, const char *label, const char *value, uint64_t v)
{
        fprintf(f, "%s{%s=\"", name, label);
        put_label(f, value);
        fprintf(f, "\"} %llu\n", (unsigned long long)v);
}

/* One histogram's samples: the buckets read once, so +Inf equals _count. */
static void latency(FILE *f, const char *name, const struct container *c)
{
        const struct lat_hist *h = &c->residency->counters.fault_latency;
        uint64_t b[LAT_BUCKETS], total = 0, sum = counter(&h->sum_ns);

        for (unsigned i = 0; i < LAT_BUCKETS; i++)
                total += b[i] = counter(&h->bucket[i]);
        for (unsigned k = LAT_LE_FIRST; k <= LAT_LE_LAST; k++) {
                fprintf(f, "%s_bucket{container=\"", name);
                put_label(f, c->id);
                fprintf(f, "\",le=\"%.9g\"} %llu\n", (double)(1ULL << k) / 1e9,
                        (unsigned long long)lat_hist_below_pow2(b, k));
        }
        fprintf(f, "%s_bucket{container=\"", name);
        put_label(f, c->id);
        fprintf(f, "\",le=\"+Inf\"} %llu\n", (unsigned long long)total);
        fprintf(f, "%s_sum{container=\"", name);
        put_label(f, c->id);
        fprintf(f, "\"} %.9f\n", (double)sum / 1e9);
        sample(f, "xmem_container_fault_latency_seconds_count", "container", c->id, total);
}

static void containers(FILE *f, struct manager *m)
{
        const char *lat = "xmem_container_fault_latency_seconds";
        size_t n = 0;

        for (const struct container *c = m->containers; c; c = c->next)
                n++;
        family(f, "xmem_containers", "gauge", "Containers attached.");
        fprintf(f, "xmem_containers %zu\n", n);
        for (size_t i = 0; i < ELEMENTSOF(ctr_metrics); i++) {
                const struct ctr_metric *d = &ctr_metrics[i];
                family(f, d->name, d->type, d->help);
                for (const struct container *c = m->containers; c; c = c->next)
                        sample(f, d->name, "container", c->id, d->get(c));
        }
        family(f, lat, "histogram",
               "Time from reading a fault to waking the faulting thread, in seconds.");
        for (const struct container *c = m->containers; c; c = c->next)
                latency(f, lat, c);
}

static void appliances(FILE *f, struct manager *m)
{
        struct xmem_transport_health h[MANAGER_MAX_APPLIANCES];

        for (size_t i = 0; i < m->n_transports; i++)
                xmem_transport_health(m->transports[i], &h[i]);
        family(f, "xmem_appliance_up", "gauge",
               "1 while every connection to the appliance is up, else 0.");
        for (size_t i = 0; i < m->n_transports; i++)
                sample(f, "xmem_appliance_up", "appliance", xmem_transport_uri(m->transports[i]),
                       h[i].conns_up == h[i].conns);
        family(f, "xmem_appliance_connections", "gauge",
               "Connections memd keeps to the appliance.");
        for (size_t i = 0; i < m->n_transports; i++)
                sample(f, "xmem_appliance_connections", "appliance",
                       xmem_transport_uri(m->transports[i]), h[i].conns);
        family(f, "xmem_appliance_connections_up", "gauge", "Of those, the ones up now.");
        for (size_t i = 0; i < m->n_transports; i++)
                sample(f, "xmem_appliance_connections_up", "appliance",
                       xmem_transport_uri(m->transports[i]), h[i].conns_up);
        family(f, "xmem_appliance_errors_total", "counter",
               "Failed requests to the appliance (broken connections, timeouts, refusals).");
        for (size_t i = 0; i < m->n_transports; i++)
                sample(f, "xmem_appliance_errors_total", "appliance",
                       xmem_transport_uri(m->transports[i]), h[i].errors);
}

int metrics_render(struct manager *m, char **ret_text, size_t *ret_len)
{
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);

        if (!f)
                return -ENOMEM;
        containers(f, m);
        appliances(f, m);
        if (ferror(f) | fclose(f)) {
                free(text);
                return -ENOMEM;
        }
        *ret_text = text;
        *ret_len = len;
        return 0;
}
