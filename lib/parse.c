/* parse.c: sizes, durations, integers. */
#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "parse.h"

int parse_u64(const char *s, uint64_t *ret)
{
        uint64_t v = 0;

        if (!s || !*s)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (!isdigit((unsigned char)*p))
                        return -EINVAL;
                if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t)(*p - '0');
        }
        *ret = v;
        return 0;
}

/* Split "12.5xyz" into integer part, fraction (as numerator/denominator) and suffix.
 * At most 9 fractional digits. */
static int split_number(const char *s, uint64_t *ret_int, uint64_t *ret_frac, uint64_t *ret_den,
                        const char **ret_suffix)
{
        uint64_t v = 0, frac = 0, den = 1;
        const char *p = s;

        if (!isdigit((unsigned char)*p))
                return -EINVAL;
        for (; isdigit((unsigned char)*p); p++) {
                if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t)(*p - '0');
        }
        if (*p == '.') {
                p++;
                if (!isdigit((unsigned char)*p))
                        return -EINVAL;
                for (; isdigit((unsigned char)*p); p++) {
                        if (den >= 1000000000ULL)
                                return -EINVAL;
                        frac = frac * 10 + (uint64_t)(*p - '0');
                        den *= 10;
                }
        }
        *ret_int = v;
        *ret_frac = frac;
        *ret_den = den;
        *ret_suffix = p;
        return 0;
}

/* v * mul + frac * mul / den, refusing overflow. */
static int scale(uint64_t v, uint64_t frac, uint64_t den, uint64_t mul, uint64_t *ret)
{
        uint64_t whole, part;

        if (mul && v > UINT64_MAX / mul)
                return -ERANGE;
        whole = v * mul;
        /* frac < den <= 1e9 and mul <= 2^50 for sizes / 3.6e12 for durations: split to avoid overflow */
        part = (mul / den) * frac + ((mul % den) * frac) / den;
        if (whole > UINT64_MAX - part)
                return -ERANGE;
        *ret = whole + part;
        return 0;
}

struct unit {
        const char *suffix;
        uint64_t mul;
};

/* NUMBER[.FRACTION]SUFFIX with SUFFIX from UNITS; fractions of the unit 1 refused. */
static int parse_with_units(const char *s, const struct unit *units, size_t n_units,
                            bool ignore_case, uint64_t *ret)
{
        uint64_t v, frac, den, out;
        const char *suffix;
        int r;

        if (!s)
                return -EINVAL;
        r = split_number(s, &v, &frac, &den, &suffix);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_units; i++) {
                if ((ignore_case ? strcasecmp : strcmp)(suffix, units[i].suffix) != 0)
                        continue;
                if (units[i].mul == 1 && frac)
                        return -EINVAL;
                r = scale(v, frac, den, units[i].mul, &out);
                if (r < 0)
                        return r;
                *ret = out;
                return 0;
        }
        return -EINVAL;
}

int parse_size(const char *s, uint64_t *ret)
{
        static const struct unit units[] = {
                { "", 1 },
                { "b", 1 },
                { "k", 1ULL << 10 }, { "kb", 1ULL << 10 }, { "kib", 1ULL << 10 },
                { "m", 1ULL << 20 }, { "mb", 1ULL << 20 }, { "mib", 1ULL << 20 },
                { "g", 1ULL << 30 }, { "gb", 1ULL << 30 }, { "gib", 1ULL << 30 },
                { "t", 1ULL << 40 }, { "tb", 1ULL << 40 }, { "tib", 1ULL << 40 },
                { "p", 1ULL << 50 }, { "pb", 1ULL << 50 }, { "pib", 1ULL << 50 },
        };

        return parse_with_units(s, units, ELEMENTSOF(units), true, ret);
}

int parse_duration(const char *s, uint64_t *ret_ns)
{
        static const struct unit units[] = {
                { "", 1000000000ULL },     { "s", 1000000000ULL },   { "ns", 1ULL },
                { "us", 1000ULL },         { "ms", 1000000ULL },     { "m", 60000000000ULL },
                { "min", 60000000000ULL }, { "h", 3600000000000ULL },
        };

        return parse_with_units(s, units, ELEMENTSOF(units), false, ret_ns);
}

const char *format_size(char *buf, size_t len, uint64_t bytes)
{
        static const char units[] = "KMGTP";
        int i = -1;
        double v = (double)bytes;

        while (v >= 1024.0 && i < 4) {
                v /= 1024.0;
                i++;
        }
        if (i < 0)
                snprintf(buf, len, "%llu", (unsigned long long)bytes);
        else if (v == (double)(uint64_t)v)
                snprintf(buf, len, "%llu%c", (unsigned long long)v, units[i]);
        else
                snprintf(buf, len, "%.1f%c", v, units[i]);
        return buf;
}
