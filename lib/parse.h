/* parse.h: strict parsing of sizes, durations and integers from outside input.
 * Garbage, negative numbers, trailing text and overflow are refused (-EINVAL / -ERANGE). */
#pragma once

#include <stdint.h>

/* "4096", "64K", "512M", "8G", "1T", "2P" (binary units, optional "iB"/"B" suffix:
 * "64KiB", "64KB"). Case-insensitive unit. */
int parse_size(const char *s, uint64_t *ret);

/* "250ms", "2s", "1.5s", "3m", "1h", "100us", "10ns"; a bare number is seconds.
 * Result in nanoseconds. */
int parse_duration(const char *s, uint64_t *ret_ns);

/* Unsigned decimal integer, whole string, no sign, no spaces. */
int parse_u64(const char *s, uint64_t *ret);

/* Format BYTES with a binary unit ("64K", "1.5G") into BUF. */
const char *format_size(char *buf, size_t len, uint64_t bytes);
