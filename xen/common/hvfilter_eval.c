/* SPDX-License-Identifier: MIT */
/*
 * hvfilter_eval.c: the hvfilter rule evaluator.
 *
 * Checks rule tables, keeps sets and breakpoints, and decides events.  Free
 * of Xen internals (see hvfilter_eval.h): compiled into Xen, into the
 * userspace harness and into the Python extension.
 */

#include "hvfilter_eval.h"

#define EV(k)        (1u << XEN_HVFILTER_EV_ ## k)
#define CMP(c)       (1u << XEN_HVFILTER_CMP_ ## c)
#define ALL_KINDS    ((1u << XEN_HVFILTER_EV_NR) - 1)
#define CR_KINDS     (EV(CR0_WRITE) | EV(CR3_WRITE) | EV(CR4_WRITE) | \
                      EV(XCR0_WRITE))

const uint32_t hvf_field_kinds[XEN_HVFILTER_FIELD_NR] = {
    [XEN_HVFILTER_FIELD_VCPU]      = ALL_KINDS,
    [XEN_HVFILTER_FIELD_CR3]       = ALL_KINDS,
    [XEN_HVFILTER_FIELD_RIP]       = ALL_KINDS,
    [XEN_HVFILTER_FIELD_CPL]       = ALL_KINDS,
    [XEN_HVFILTER_FIELD_NEW_VALUE] = CR_KINDS | EV(MSR_WRITE) |
                                     EV(DEBUG_EXCEPTION) | EV(DESC_ACCESS),
    [XEN_HVFILTER_FIELD_OLD_VALUE] = CR_KINDS | EV(MSR_WRITE),
    [XEN_HVFILTER_FIELD_INDEX]     = EV(MSR_WRITE) | EV(BREAKPOINT) |
                                     EV(DEBUG_EXCEPTION) | EV(CPUID) |
                                     EV(DESC_ACCESS) | EV(MEM_ACCESS),
    [XEN_HVFILTER_FIELD_SUBINDEX]  = EV(CPUID) | EV(DESC_ACCESS),
    [XEN_HVFILTER_FIELD_GFN]       = EV(BREAKPOINT) | EV(SINGLESTEP) |
                                     EV(DEBUG_EXCEPTION) | EV(MEM_ACCESS),
    [XEN_HVFILTER_FIELD_GLA]       = EV(BREAKPOINT) | EV(MEM_ACCESS),
};

#define ALL_CMPS ((1u << XEN_HVFILTER_CMP_NR) - 1)

const uint8_t hvf_field_cmps[XEN_HVFILTER_FIELD_NR] = {
    [XEN_HVFILTER_FIELD_VCPU]      = CMP(EQ) | CMP(RANGE) | CMP(IN_SET),
    [XEN_HVFILTER_FIELD_CR3]       = ALL_CMPS,
    [XEN_HVFILTER_FIELD_RIP]       = ALL_CMPS,
    [XEN_HVFILTER_FIELD_CPL]       = CMP(EQ) | CMP(RANGE),
    [XEN_HVFILTER_FIELD_NEW_VALUE] = ALL_CMPS,
    [XEN_HVFILTER_FIELD_OLD_VALUE] = ALL_CMPS,
    [XEN_HVFILTER_FIELD_INDEX]     = ALL_CMPS,
    [XEN_HVFILTER_FIELD_SUBINDEX]  = ALL_CMPS,
    [XEN_HVFILTER_FIELD_GFN]       = ALL_CMPS,
    [XEN_HVFILTER_FIELD_GLA]       = ALL_CMPS,
};

const uint32_t hvf_action_kinds[XEN_HVFILTER_ACT_NR] = {
    [XEN_HVFILTER_ACT_FORWARD] = ALL_KINDS,
    [XEN_HVFILTER_ACT_PASS]    = ALL_KINDS & ~EV(MEM_ACCESS),
    [XEN_HVFILTER_ACT_EMULATE] = EV(BREAKPOINT),
    [XEN_HVFILTER_ACT_SAMPLE]  = ALL_KINDS & ~EV(MEM_ACCESS),
};

/* ------------------------------------------------------------------------
 * Hashing: two-choice cuckoo hash of 4-slot buckets.
 */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/*
 * Buckets for a capacity: a power of two, load at most one half, and at
 * least two so that the multiply-shift hash never shifts by 64.
 */
static uint32_t hash_nbuckets(uint32_t capacity)
{
    uint32_t n = 2;

    while ( n * XEN_HVFILTER_SET_BUCKET_SLOTS < 2 * capacity )
        n <<= 1;
    return n;
}

static void hash_init(struct hvf_hash *h, struct hvf_bucket *buckets,
                      uint32_t capacity, uint64_t seed)
{
    uint32_t n = hash_nbuckets(capacity);
    unsigned int log2 = 0;

    while ( (1u << log2) < n )
        log2++;
    h->buckets = buckets;
    h->nbuckets = n;
    h->shift = 64 - log2;
    h->mul1 = splitmix64(&seed) | 1;
    h->mul2 = splitmix64(&seed) | 1;
    h->capacity = capacity;
    h->count = 0;
}

static uint32_t hash_b(const struct hvf_hash *h, uint64_t mul, uint64_t key)
{
    return (uint32_t)((key * mul) >> h->shift);   /* multiply-shift */
}

static uint32_t hash_b1(const struct hvf_hash *h, uint64_t key)
{
    return hash_b(h, h->mul1, key);
}

static uint32_t hash_b2(const struct hvf_hash *h, uint64_t key)
{
    return hash_b(h, h->mul2, key);
}

static int bucket_find(const struct hvf_bucket *b, uint64_t key)
{
    unsigned int i;

    for ( i = 0; i < XEN_HVFILTER_SET_BUCKET_SLOTS; i++ )
        if ( (b->used & (1u << i)) && b->key[i] == key )
            return i;
    return -1;
}

static int bucket_free_slot(const struct hvf_bucket *b)
{
    unsigned int i;

    for ( i = 0; i < XEN_HVFILTER_SET_BUCKET_SLOTS; i++ )
        if ( !(b->used & (1u << i)) )
            return i;
    return -1;
}

/* Find a key: true, with its bucket in *bp and slot in *slot, or false. */
static bool hash_find(const struct hvf_hash *h, uint64_t key,
                      struct hvf_bucket **bp, int *slot)
{
    struct hvf_bucket *b = &h->buckets[hash_b1(h, key)];
    int i = bucket_find(b, key);

    if ( i < 0 )
    {
        b = &h->buckets[hash_b2(h, key)];
        i = bucket_find(b, key);
        if ( i < 0 )
            return false;
    }
    if ( bp )
        *bp = b;
    if ( slot )
        *slot = i;
    return true;
}

/* bucket_hits() below is written out for four slots. */
typedef char hvf_bucket_slots_are_4[XEN_HVFILTER_SET_BUCKET_SLOTS == 4 ? 1 : -1];

/* Slots of bucket b holding key, as a bitmap; branch-free. */
static unsigned int bucket_hits(const struct hvf_bucket *b, uint64_t key)
{
    unsigned int m = (b->key[0] == key) | ((b->key[1] == key) << 1) |
                     ((b->key[2] == key) << 2) | ((b->key[3] == key) << 3);

    return m & b->used;
}

/*
 * The lookup of the event path: both buckets are addressed before either
 * is read, so that their two cache lines load in parallel.
 */
static bool hash_contains(const struct hvf_hash *h, uint64_t key)
{
    const struct hvf_bucket *b1 = &h->buckets[hash_b1(h, key)];
    const struct hvf_bucket *b2 = &h->buckets[hash_b2(h, key)];

    return (bucket_hits(b1, key) | bucket_hits(b2, key)) != 0;
}

static void slot_put(struct hvf_bucket *b, int i, uint64_t key, uint32_t val)
{
    b->key[i] = key;
    b->val[i] = val;
    b->used |= 1u << i;
}

/*
 * Insert a key that is not present.  Returns 0 or -ENOSPC; on -ENOSPC the
 * table is exactly as before (the evictions are undone).
 */
static int hash_insert(struct hvf_hash *h, uint64_t key, uint32_t val)
{
    /* 8 bytes a step: 512 bytes of stack, on control paths only. */
    struct {
        uint32_t bucket;
        uint8_t slot;
    } path[HVF_HASH_MAX_KICKS];
    uint32_t b1, b2, cur;
    unsigned int kick;
    int i;

    if ( h->count >= h->capacity )
        return -ENOSPC;

    b1 = hash_b1(h, key);
    b2 = hash_b2(h, key);
    if ( (i = bucket_free_slot(&h->buckets[b1])) >= 0 )
    {
        slot_put(&h->buckets[b1], i, key, val);
        goto done;
    }
    if ( (i = bucket_free_slot(&h->buckets[b2])) >= 0 )
    {
        slot_put(&h->buckets[b2], i, key, val);
        goto done;
    }

    /* Evict along a path, remembering it so that a failure can be undone. */
    cur = b1;
    for ( kick = 0; kick < HVF_HASH_MAX_KICKS; kick++ )
    {
        struct hvf_bucket *b = &h->buckets[cur];
        unsigned int s = (kick + (uint32_t)key) % XEN_HVFILTER_SET_BUCKET_SLOTS;
        uint64_t ek = b->key[s];
        uint32_t ev = b->val[s], alt;

        path[kick].bucket = cur;
        path[kick].slot = s;
        b->key[s] = key;
        b->val[s] = val;
        key = ek;
        val = ev;

        alt = hash_b1(h, key);
        if ( alt == cur )
            alt = hash_b2(h, key);
        if ( (i = bucket_free_slot(&h->buckets[alt])) >= 0 )
        {
            slot_put(&h->buckets[alt], i, key, val);
            goto done;
        }
        cur = alt;
    }

    /* Undo: walk the path back, swapping the homeless key in again. */
    while ( kick-- > 0 )
    {
        struct hvf_bucket *b = &h->buckets[path[kick].bucket];
        unsigned int s = path[kick].slot;
        uint64_t ek = b->key[s];
        uint32_t ev = b->val[s];

        b->key[s] = key;
        b->val[s] = val;
        key = ek;
        val = ev;
    }
    return -ENOSPC;

 done:
    h->count++;
    return 0;
}

static bool hash_remove(struct hvf_hash *h, uint64_t key)
{
    struct hvf_bucket *b;
    int i;

    if ( !hash_find(h, key, &b, &i) )
        return false;
    b->used &= ~(1u << i);
    b->key[i] = 0;
    b->val[i] = 0;
    h->count--;
    return true;
}

static void hash_clear(struct hvf_hash *h)
{
    memset(h->buckets, 0, sizeof(*h->buckets) * h->nbuckets);
    h->count = 0;
}

/* ------------------------------------------------------------------------
 * Table checking.
 */

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    size_t i;

    for ( i = 0; i < n; i++ )
        if ( b[i] )
            return false;
    return true;
}

static int check_cond(const struct xen_hvfilter_cond *c, uint32_t kinds,
                      unsigned int nr_sets)
{
    if ( c->field >= XEN_HVFILTER_FIELD_NR || c->cmp >= XEN_HVFILTER_CMP_NR ||
         (c->flags & ~XEN_HVFILTER_COND_FLAGS) || c->pad )
        return -EINVAL;

    /* The field must exist for every kind of the rule. */
    if ( kinds & ~hvf_field_kinds[c->field] )
        return -EINVAL;
    if ( !(hvf_field_cmps[c->field] & (1u << c->cmp)) )
        return -EINVAL;

    switch ( c->cmp )
    {
    case XEN_HVFILTER_CMP_EQ:
        if ( !c->mask || (c->value & ~c->mask) || c->value2 || c->set_id )
            return -EINVAL;
        break;

    case XEN_HVFILTER_CMP_RANGE:
        if ( !c->mask || (c->value & ~c->mask) || (c->value2 & ~c->mask) ||
             c->value > c->value2 || c->set_id )
            return -EINVAL;
        break;

    case XEN_HVFILTER_CMP_ANY_BITS:
        if ( !c->mask || c->value || c->value2 || c->set_id )
            return -EINVAL;
        break;

    case XEN_HVFILTER_CMP_IN_SET:
        if ( c->mask || c->value || c->value2 || c->set_id >= nr_sets )
            return -EINVAL;
        break;
    }

    return 0;
}

static int check_rule(const struct xen_hvfilter_rule *r, unsigned int nr_sets,
                      uint32_t supported_kinds, int *bad_cond)
{
    unsigned int i;
    int rc;

    *bad_cond = -1;
    if ( r->nr_conds > XEN_HVFILTER_MAX_CONDS )
        return -E2BIG;
    if ( !r->kinds || (r->kinds & ~ALL_KINDS) || r->pad0 || r->pad1 ||
         r->action >= XEN_HVFILTER_ACT_NR )
        return -EINVAL;
    if ( r->kinds & ~hvf_action_kinds[r->action] )
        return -EINVAL;

    if ( r->action == XEN_HVFILTER_ACT_EMULATE )
    {
        if ( r->fallback != XEN_HVFILTER_ACT_FORWARD &&
             r->fallback != XEN_HVFILTER_ACT_PASS )
            return -EINVAL;
    }
    else if ( r->fallback )
        return -EINVAL;

    if ( (r->action == XEN_HVFILTER_ACT_SAMPLE) != (r->sample != 0) )
        return -EINVAL;

    for ( i = 0; i < XEN_HVFILTER_MAX_CONDS; i++ )
    {
        *bad_cond = i;
        if ( i >= r->nr_conds )
        {
            if ( !all_zero(&r->conds[i], sizeof(r->conds[i])) )
                return -EINVAL;
            continue;
        }
        if ( (rc = check_cond(&r->conds[i], r->kinds, nr_sets)) )
            return rc;
    }
    *bad_cond = -1;

    if ( r->kinds & ~supported_kinds )
        return -EOPNOTSUPP;

    return 0;
}

static int check_set(const struct xen_hvfilter_set *s)
{
    size_t len = 0;

    if ( s->capacity > XEN_HVFILTER_MAX_SET_ENTRIES )
        return -E2BIG;
    while ( len < XEN_HVFILTER_SET_NAME_LEN && s->name[len] )
        len++;
    if ( len == 0 || len == XEN_HVFILTER_SET_NAME_LEN ||
         !all_zero(&s->name[len], XEN_HVFILTER_SET_NAME_LEN - len) )
        return -EINVAL;
    if ( !s->mask || !s->capacity || s->nr_init > s->capacity || s->pad )
        return -EINVAL;
    return 0;
}

int hvf_table_check(const struct xen_hvfilter_rule *rules,
                    unsigned int nr_rules,
                    const struct xen_hvfilter_set *sets, unsigned int nr_sets,
                    unsigned int nr_keys, uint32_t supported_kinds,
                    int *bad_rule, int *bad_cond)
{
    unsigned int i, total = 0;
    uint64_t init = 0;
    int rule = -1, cond = -1, rc = 0;

    if ( nr_rules > XEN_HVFILTER_MAX_RULES || nr_sets > XEN_HVFILTER_MAX_SETS )
    {
        rc = -E2BIG;
        goto out;
    }

    for ( i = 0; i < nr_sets; i++ )
    {
        if ( (rc = check_set(&sets[i])) )
        {
            cond = -2 - (int)i;
            goto out;
        }
        init += sets[i].nr_init;
    }
    if ( init != nr_keys )
    {
        rc = -EINVAL;
        goto out;
    }

    for ( i = 0; i < nr_rules; i++ )
    {
        rule = i;
        if ( (rc = check_rule(&rules[i], nr_sets, supported_kinds, &cond)) )
            goto out;
        total += rules[i].nr_conds;
        if ( total > XEN_HVFILTER_MAX_TOTAL_CONDS )
        {
            rc = -E2BIG;
            goto out;
        }
    }
    rule = -1;

 out:
    if ( bad_rule )
        *bad_rule = rc ? rule : -1;
    if ( bad_cond )
        *bad_cond = rc ? cond : -1;
    return rc;
}

/* ------------------------------------------------------------------------
 * Tables and sets.
 */

/* The table header rounded up so that the buckets are 64-byte aligned. */
static size_t table_header_size(void)
{
    return (sizeof(struct hvf_table) + 63) & ~(size_t)63;
}

size_t hvf_table_size(const struct xen_hvfilter_set *sets,
                      unsigned int nr_sets)
{
    size_t size = table_header_size();
    unsigned int i;

    for ( i = 0; i < nr_sets; i++ )
        size += sizeof(struct hvf_bucket) * hash_nbuckets(sets[i].capacity);
    return size;
}

int hvf_table_init(void *mem, size_t size,
                   const struct xen_hvfilter_rule *rules, unsigned int nr_rules,
                   const struct xen_hvfilter_set *sets, unsigned int nr_sets,
                   const uint64_t *keys, unsigned int nr_keys,
                   uint64_t seed, uint64_t generation)
{
    struct hvf_table *t = mem;
    struct hvf_bucket *next;
    unsigned int i, k;
    int rc;

    if ( size < hvf_table_size(sets, nr_sets) )
        return -EINVAL;

    t->generation = generation;
    t->nr_rules = nr_rules;
    t->nr_sets = nr_sets;
    t->nr_keys = nr_keys;
    memcpy(t->rules, rules, sizeof(*rules) * nr_rules);

    for ( k = 0; k < XEN_HVFILTER_EV_NR; k++ )
        for ( i = 0; i < nr_rules; i++ )
            if ( rules[i].kinds & (1u << k) )
                t->by_kind[k][t->nr_by_kind[k]++] = i;

    next = (struct hvf_bucket *)((uint8_t *)mem + table_header_size());
    for ( i = 0; i < nr_sets; i++ )
    {
        struct hvf_set *s = &t->sets[i];

        memcpy(s->name, sets[i].name, sizeof(s->name));
        s->mask = sets[i].mask;
        hash_init(&s->hash, next, sets[i].capacity, splitmix64(&seed));
        next += s->hash.nbuckets;
    }

    for ( i = 0; i < nr_sets; i++ )
    {
        if ( (rc = hvf_set_add(t, i, keys, sets[i].nr_init)) )
            return rc;
        keys += sets[i].nr_init;
    }

    return 0;
}

int hvf_set_add(struct hvf_table *t, unsigned int set_id,
                const uint64_t *keys, unsigned int nr)
{
    struct hvf_set *s;
    unsigned int i;
    int rc = 0;

    if ( !t || set_id >= t->nr_sets )
        return -ENOENT;
    s = &t->sets[set_id];

    /* Keys added by this batch carry a fresh epoch, so they can be undone. */
    s->epoch++;
    for ( i = 0; i < nr; i++ )
    {
        uint64_t k = keys[i] & s->mask;

        if ( hash_contains(&s->hash, k) )
            continue;
        if ( (rc = hash_insert(&s->hash, k, s->epoch)) )
            break;
    }

    if ( rc )
    {
        while ( i-- > 0 )
        {
            uint64_t k = keys[i] & s->mask;
            struct hvf_bucket *b;
            int slot;

            if ( hash_find(&s->hash, k, &b, &slot) && b->val[slot] == s->epoch )
                hash_remove(&s->hash, k);
        }
    }

    return rc;
}

int hvf_set_remove(struct hvf_table *t, unsigned int set_id,
                   const uint64_t *keys, unsigned int nr)
{
    struct hvf_set *s;
    unsigned int i;

    if ( !t || set_id >= t->nr_sets )
        return -ENOENT;
    s = &t->sets[set_id];

    for ( i = 0; i < nr; i++ )
        if ( !hash_contains(&s->hash, keys[i] & s->mask) )
            return -ENOENT;
    for ( i = 0; i < nr; i++ )
        hash_remove(&s->hash, keys[i] & s->mask);

    return 0;
}

int hvf_set_flush(struct hvf_table *t, unsigned int set_id)
{
    if ( !t || set_id >= t->nr_sets )
        return -ENOENT;
    hash_clear(&t->sets[set_id].hash);
    return 0;
}

bool hvf_set_contains(const struct hvf_table *t, unsigned int set_id,
                      uint64_t key)
{
    const struct hvf_set *s;

    if ( !t || set_id >= t->nr_sets )
        return false;
    s = &t->sets[set_id];
    return hash_contains(&s->hash, key & s->mask);
}

/* ------------------------------------------------------------------------
 * Breakpoints.
 */

void hvf_bptab_init(struct hvf_bptab *bt, uint64_t seed)
{
    unsigned int i;

    hash_init(&bt->hash, bt->buckets, XEN_HVFILTER_MAX_BREAKPOINTS, seed);
    bt->nr_free = XEN_HVFILTER_MAX_BREAKPOINTS;
    for ( i = 0; i < XEN_HVFILTER_MAX_BREAKPOINTS; i++ )
        bt->free[i] = XEN_HVFILTER_MAX_BREAKPOINTS - 1 - i;
}

int hvf_bp_check(const struct xen_hvfilter_bp *bp, bool remove)
{
    if ( remove )
        return (bp->insn_len || !all_zero(bp->pad, sizeof(bp->pad)) ||
                !all_zero(bp->insn, sizeof(bp->insn))) ? -EINVAL : 0;

    if ( !bp->insn_len || bp->insn_len > XEN_HVFILTER_MAX_INSN_LEN ||
         bp->insn[0] == 0xcc || !all_zero(bp->pad, sizeof(bp->pad)) ||
         !all_zero(&bp->insn[bp->insn_len], sizeof(bp->insn) - bp->insn_len) )
        return -EINVAL;
    return 0;
}

int hvf_bp_add(struct hvf_bptab *bt, const struct xen_hvfilter_bp *bp)
{
    struct hvf_bp *e;
    uint16_t idx;
    int rc;

    if ( (rc = hvf_bp_check(bp, false)) )
        return rc;
    if ( hash_contains(&bt->hash, bp->gpa) )
        return -EEXIST;
    if ( !bt->nr_free )
        return -ENOSPC;

    idx = bt->free[bt->nr_free - 1];
    if ( (rc = hash_insert(&bt->hash, bp->gpa, idx)) )
        return rc;
    bt->nr_free--;

    e = &bt->bp[idx];
    e->gpa = bp->gpa;
    e->insn_len = bp->insn_len;
    memcpy(e->insn, bp->insn, sizeof(e->insn));
    return 0;
}

int hvf_bp_remove(struct hvf_bptab *bt, uint64_t gpa)
{
    struct hvf_bucket *b;
    int slot;
    uint32_t idx;

    if ( !hash_find(&bt->hash, gpa, &b, &slot) )
        return -ENOENT;
    idx = b->val[slot];
    hash_remove(&bt->hash, gpa);
    memset(&bt->bp[idx], 0, sizeof(bt->bp[idx]));
    bt->free[bt->nr_free++] = idx;
    return 0;
}

const struct hvf_bp *hvf_bp_find(const struct hvf_bptab *bt, uint64_t gpa)
{
    struct hvf_bucket *b;
    int slot;

    if ( !bt || !hash_find(&bt->hash, gpa, &b, &slot) )
        return NULL;
    return &bt->bp[b->val[slot]];
}

unsigned int hvf_bp_count(const struct hvf_bptab *bt)
{
    return bt->hash.count;
}

/* ------------------------------------------------------------------------
 * Evaluation: the event path.  No allocation, no unbounded loop.
 */

static bool cond_holds(const struct hvf_table *t,
                       const struct xen_hvfilter_cond *c,
                       const struct hvf_event *ev)
{
    uint64_t v = ev->f[c->field];
    bool hit;

    switch ( c->cmp )
    {
    case XEN_HVFILTER_CMP_EQ:
        hit = (v & c->mask) == c->value;
        break;

    case XEN_HVFILTER_CMP_RANGE:
        v &= c->mask;
        hit = v >= c->value && v <= c->value2;
        break;

    case XEN_HVFILTER_CMP_ANY_BITS:
        hit = (v & c->mask) != 0;
        break;

    default: /* XEN_HVFILTER_CMP_IN_SET */
    {
        const struct hvf_set *s = &t->sets[c->set_id];

        hit = hash_contains(&s->hash, v & s->mask);
        break;
    }
    }

    return hit != !!(c->flags & XEN_HVFILTER_COND_NEGATE);
}

static bool rule_matches(const struct hvf_table *t,
                         const struct xen_hvfilter_rule *r,
                         const struct hvf_event *ev)
{
    unsigned int i;

    for ( i = 0; i < r->nr_conds; i++ )
        if ( !cond_holds(t, &r->conds[i], ev) )
            return false;
    return true;
}

static void count(struct xen_hvfilter_counts *k, struct xen_hvfilter_counts *r,
                  unsigned int action, bool sampled_out, bool fallback)
{
    k->seen++;
    r->seen++;
    if ( fallback )
    {
        k->fallbacks++;
        r->fallbacks++;
    }
    if ( sampled_out )
    {
        k->sampled_out++;
        r->sampled_out++;
        return;
    }
    switch ( action )
    {
    case XEN_HVFILTER_ACT_PASS:
        k->passed++;
        r->passed++;
        break;
    case XEN_HVFILTER_ACT_EMULATE:
        k->emulated++;
        r->emulated++;
        break;
    default:
        k->forwarded++;
        r->forwarded++;
        break;
    }
}

static void reset_generation(struct hvf_counters *c, uint64_t generation)
{
    memset(&c->unmatched, 0, sizeof(c->unmatched));
    memset(c->rules, 0, sizeof(c->rules));
    memset(c->sample_ctr, 0, sizeof(c->sample_ctr));
    c->generation = generation;
}

void hvf_eval(const struct hvf_table *t, const struct hvf_bptab *bt,
              struct hvf_counters *c, const struct hvf_event *ev,
              struct hvf_verdict *v)
{
    struct xen_hvfilter_counts *kc;
    const struct xen_hvfilter_rule *r;
    const struct hvf_bp *bp;
    unsigned int i, n, idx;
    bool sampled_out = false, fallback = false;

    v->action = XEN_HVFILTER_ACT_FORWARD;
    v->rule = -1;
    v->insn_len = 0;

    if ( ev->kind >= XEN_HVFILTER_EV_NR )
        return;
    kc = &c->kinds[ev->kind];
    if ( !t )
    {
        /* No table: forwarded, counted per kind only (no generation). */
        kc->seen++;
        kc->forwarded++;
        return;
    }
    if ( c->generation != t->generation )
        reset_generation(c, t->generation);

    n = t->nr_by_kind[ev->kind];
    for ( i = 0; i < n; i++ )
    {
        idx = t->by_kind[ev->kind][i];
        r = &t->rules[idx];
        if ( rule_matches(t, r, ev) )
            goto matched;
    }
    count(kc, &c->unmatched, XEN_HVFILTER_ACT_FORWARD, false, false);
    return;

 matched:
    v->rule = idx;
    switch ( r->action )
    {
    case XEN_HVFILTER_ACT_PASS:
        v->action = XEN_HVFILTER_ACT_PASS;
        break;

    case XEN_HVFILTER_ACT_SAMPLE:
        if ( c->sample_ctr[idx] == 0 )
            v->action = XEN_HVFILTER_ACT_FORWARD;
        else
        {
            v->action = XEN_HVFILTER_ACT_PASS;
            sampled_out = true;
        }
        if ( ++c->sample_ctr[idx] >= r->sample )
            c->sample_ctr[idx] = 0;
        break;

    case XEN_HVFILTER_ACT_EMULATE:
        bp = hvf_bp_find(bt, (ev->f[XEN_HVFILTER_FIELD_GFN] << HVF_PAGE_SHIFT) |
                             (ev->f[XEN_HVFILTER_FIELD_GLA] &
                              ((1u << HVF_PAGE_SHIFT) - 1)));
        if ( bp )
        {
            v->action = XEN_HVFILTER_ACT_EMULATE;
            v->insn_len = bp->insn_len;
            memcpy(v->insn, bp->insn, sizeof(v->insn));
        }
        else
        {
            v->action = r->fallback;
            fallback = true;
        }
        break;

    default:
        v->action = XEN_HVFILTER_ACT_FORWARD;
        break;
    }

    count(kc, &c->rules[idx], v->action, sampled_out, fallback);
}

void hvf_eval_emulate_failed(struct hvf_counters *c,
                             const struct hvf_event *ev,
                             struct hvf_verdict *v)
{
    struct xen_hvfilter_counts *k, *r;

    if ( v->action != XEN_HVFILTER_ACT_EMULATE || v->rule < 0 ||
         ev->kind >= XEN_HVFILTER_EV_NR )
        return;
    k = &c->kinds[ev->kind];
    r = &c->rules[v->rule];
    k->emulated--;
    r->emulated--;
    k->forwarded++;
    r->forwarded++;
    k->fallbacks++;
    r->fallbacks++;
    v->action = XEN_HVFILTER_ACT_FORWARD;
    v->insn_len = 0;
}

void hvf_counters_reset(struct hvf_counters *c)
{
    memset(c, 0, sizeof(*c));
}

static void counts_add(struct xen_hvfilter_counts *o,
                       const struct xen_hvfilter_counts *i)
{
    o->seen += i->seen;
    o->forwarded += i->forwarded;
    o->passed += i->passed;
    o->emulated += i->emulated;
    o->sampled_out += i->sampled_out;
    o->fallbacks += i->fallbacks;
}

void hvf_stats_add(struct xen_hvfilter_stats *out,
                   const struct hvf_counters *c)
{
    unsigned int i;

    for ( i = 0; i < XEN_HVFILTER_EV_NR; i++ )
        counts_add(&out->kinds[i], &c->kinds[i]);
    if ( c->generation != out->generation )
        return;
    counts_add(&out->unmatched, &c->unmatched);
    for ( i = 0; i < XEN_HVFILTER_MAX_RULES; i++ )
        counts_add(&out->rules[i], &c->rules[i]);
}

/*
 * Local variables:
 * mode: C
 * c-file-style: "BSD"
 * c-basic-offset: 4
 * tab-width: 4
 * indent-tabs-mode: nil
 * End:
 */
