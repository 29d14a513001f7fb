/* metrics.h: memd's Prometheus endpoint (--metrics tcp://ADDRESS:PORT, off by
 * default): a small HTTP server on memd's event loop (metrics.c) that serves
 * the text exposition format (metrics-render.c). docs/operations.md "Metrics"
 * lists the metrics. */
#pragma once

#include <stddef.h>
#include <sys/socket.h>

#include "error.h"

struct manager;
struct metrics;

#define METRICS_MAX_CLIENTS 8                        /* scrapes served at once; more are closed */
#define METRICS_REQUEST_MAX 4096                     /* a request's head, bytes */
#define METRICS_CLIENT_TIMEOUT_USEC (5 * 1000000ULL) /* a scrape's whole life */

/* Parse --metrics: tcp://IP:PORT with a numeric IPv4 or bracketed IPv6
 * address that is not a wildcard (0.0.0.0, [::]): the operator names the
 * interface the metrics are served on. */
int metrics_parse_address(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len,
                          struct xmem_error *err);

/* Listen on ADDRESS (already checked by metrics_parse_address) and serve on
 * M's event loop. */
int metrics_start(struct manager *m, const char *address, struct metrics **ret,
                  struct xmem_error *err);
/* Close the listening socket and every scrape in flight. NULL is fine. */
void metrics_free(struct metrics *x);

/* Pure: what the first LEN bytes of an HTTP request head ask for. 0: not
 * complete yet (and under METRICS_REQUEST_MAX); 200: GET /metrics (or /);
 * 400: malformed or too long; 404: another path; 405: another method. */
int metrics_http_request(const char *buf, size_t len);

/* The exposition text of M's containers and appliances (malloc'd) and its
 * length. */
int metrics_render(struct manager *m, char **ret_text, size_t *ret_len);
