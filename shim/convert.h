/* convert.h: what convert.c (local memory to file or appliance memory) and
 * convert-back.c (back to local memory) share (docs/shim.md "Conversion"). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "shim.h"

#define MIN_U64(a, b) ((a) < (b) ? (a) : (b))
#define CONV_BATCH 64

/* The range being converted and the handler thread that serves its faults
 * (a userfaultfd of the conversion's own). */
struct conv_state {
        int uffd, stopfd;
        pthread_t handler;
        pthread_mutex_t mu;
        uint64_t start, len, src; /* the range; back from a file: where its pages are */
        uint64_t *dirty;          /* a bit per page written since its last copy */
        uint64_t dirty_cap;       /* bits the bitmap holds */
        bool hold;                /* the window: write faults wait */
        bool to_file;             /* missing faults: zero pages (to file) or the file's */
        const void *zeros;        /* a page of zeros */
};
extern struct conv_state conv;
extern struct shim_convert_stats conv_stats; /* the conversion running */

uint64_t conv_now_ns(void);
void conv_wake(uint64_t start, uint64_t len);
bool conv_page_zero(const uint64_t *p);
/* Record a window of NS (writers held, or the swap). */
void conv_window(uint64_t ns);

/* convert-back.c: fill page ADDR of a range coming back from the file. */
void conv_fill_page(uint64_t addr);
/* L back to local memory, from file memory or from appliance memory. */
int conv_file_to_local(const struct shim_local *l);
int conv_app_to_local(const struct shim_local *l);
