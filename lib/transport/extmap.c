/* extmap.c: sorted disjoint extents with replace-on-insert (see extmap.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "extmap.h"

#define HOLE UINT64_MAX

void extmap_clear(struct extmap *m)
{
        free(m->v);
        m->v = NULL;
        m->n = m->cap = 0;
}

/* Index of the first extent ending after OFF. */
static size_t lower(const struct extmap *m, uint64_t off)
{
        size_t lo = 0, hi = m->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (m->v[mid].off + m->v[mid].len <= off)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

const struct extmap_ext *extmap_find(const struct extmap *m, uint64_t off)
{
        size_t i = lower(m, off);

        if (i < m->n && m->v[i].off <= off)
                return &m->v[i];
        return NULL;
}

static int reserve(struct extmap *m, size_t extra)
{
        size_t cap;
        struct extmap_ext *v;

        if (m->n + extra <= m->cap)
                return 0;
        cap = m->cap ? m->cap * 2 : 16;
        while (cap < m->n + extra)
                cap *= 2;
        v = realloc(m->v, cap * sizeof(*v));
        if (!v)
                return -ENOMEM;
        m->v = v;
        m->cap = cap;
        return 0;
}

static bool continues(const struct extmap_ext *a, const struct extmap_ext *b)
{
        if (a->off + a->len != b->off || a->writable != b->writable)
                return false;
        if (a->pool == HOLE || b->pool == HOLE)
                return a->pool == b->pool;
        return a->pool + a->len == b->pool;
}

static uint64_t shifted(uint64_t pool, uint64_t by)
{
        return pool == HOLE ? HOLE : pool + by;
}

int extmap_insert(struct extmap *m, const struct extmap_ext *e)
{
        uint64_t end = e->off + e->len;
        size_t i, j, keep_tail = 0;
        struct extmap_ext head = { 0 }, tail = { 0 };
        bool has_head = false, has_tail = false;

        if (e->len == 0)
                return 0;
        if (reserve(m, 2) < 0)
                return -ENOMEM;
        i = lower(m, e->off);
        /* extents [i, j) overlap E */
        for (j = i; j < m->n && m->v[j].off < end; j++)
                ;
        if (i < j && m->v[i].off < e->off) {
                head = m->v[i];
                head.len = e->off - head.off;
                has_head = true;
        }
        if (i < j && m->v[j - 1].off + m->v[j - 1].len > end) {
                const struct extmap_ext *last = &m->v[j - 1];
                tail = *last;
                tail.off = end;
                tail.len = last->off + last->len - end;
                tail.pool = shifted(last->pool, end - last->off);
                has_tail = true;
        }
        keep_tail = m->n - j;
        {
                size_t nnew = (size_t)has_head + 1 + (size_t)has_tail;
                memmove(&m->v[i + nnew], &m->v[j], keep_tail * sizeof(m->v[0]));
                m->n = i + nnew + keep_tail;
                if (has_head)
                        m->v[i++] = head;
                m->v[i] = *e;
                if (has_tail)
                        m->v[i + 1] = tail;
        }
        /* merge E with its neighbours where they continue each other */
        if (i + 1 < m->n && continues(&m->v[i], &m->v[i + 1])) {
                m->v[i].len += m->v[i + 1].len;
                memmove(&m->v[i + 1], &m->v[i + 2], (m->n - i - 2) * sizeof(m->v[0]));
                m->n--;
        }
        if (i > 0 && continues(&m->v[i - 1], &m->v[i])) {
                m->v[i - 1].len += m->v[i].len;
                memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(m->v[0]));
                m->n--;
        }
        return 0;
}

int extmap_insert_keep_writable(struct extmap *m, const struct extmap_ext *e)
{
        uint64_t p = e->off, end = e->off + e->len;

        while (p < end) {
                size_t i = lower(m, p);
                uint64_t q = end;
                struct extmap_ext piece;
                int r;

                if (i < m->n && m->v[i].off <= p && m->v[i].writable) {
                        p = m->v[i].off + m->v[i].len;
                        continue;
                }
                for (size_t j = i; j < m->n && m->v[j].off < end; j++)
                        if (m->v[j].writable) {
                                q = m->v[j].off;
                                break;
                        }
                piece = (struct extmap_ext){ p, q - p, shifted(e->pool, p - e->off), e->writable };
                r = extmap_insert(m, &piece);
                if (r < 0)
                        return r;
                p = q;
        }
        return 0;
}
