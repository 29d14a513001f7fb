/* error.h: a short explanation travelling beside a negative errno, so that
 * library code never prints and the boundary (CLI, API reply, hook) can say
 * exactly what was wrong in one line. */
#pragma once

#include "macro.h"

#define XMEM_ERROR_MAX 256

struct xmem_error {
        int code; /* negative errno, 0 when unset */
        char msg[XMEM_ERROR_MAX];
};

/* Record CODE (negative errno) with a formatted message; returns CODE.
 * ERR may be NULL, then only CODE is returned. */
int xmem_error_set(struct xmem_error *err, int code, const char *fmt, ...) _printf_(3, 4);

/* Prefix an already-set message with context ("attach web-1: ..."); returns err->code. */
int xmem_error_prefix(struct xmem_error *err, const char *fmt, ...) _printf_(2, 3);

/* The message if one was set, else strerror(-code). */
const char *xmem_error_str(const struct xmem_error *err);
