/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the hvfilter evaluator.
 *
 * Input: a 4-byte header (number of rules, number of sets, number of keys),
 * the raw rules, sets and keys as they would cross the domctl, then a
 * stream of operations: events, set and breakpoint updates.  The table is
 * checked as the hypervisor checks it; a table that passes is built and the
 * operations are run.  Besides the sanitizers, the target asserts the
 * evaluator's invariants (statistics conservation, verdict consistency,
 * set contents after updates) and aborts when one breaks.
 *
 * Built with -DHVF_FUZZ_SEEDS instead, it is a program that writes the seed
 * corpus (valid tables with events) into the directory given.
 */

#include <stdio.h>
#include <stdlib.h>

#include "harness.h"

#define OP_EVENT      0
#define OP_SET_ADD    1
#define OP_SET_REMOVE 2
#define OP_SET_FLUSH  3
#define OP_BP_ADD     4
#define OP_BP_REMOVE  5
#define OP_NR         6

struct reader {
    const uint8_t *p;
    size_t left;
};

static bool take(struct reader *r, void *dst, size_t n)
{
    if ( r->left < n )
        return false;
    memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
    return true;
}

#define INVARIANT(cond) do {                                              \
    if ( !(cond) )                                                        \
    {                                                                     \
        fprintf(stderr, "invariant broken: %s (line %d)\n", #cond,        \
                __LINE__);                                                \
        abort();                                                          \
    }                                                                     \
} while ( 0 )

static void check_counts(const struct xen_hvfilter_counts *k)
{
    INVARIANT(k->seen == k->forwarded + k->passed + k->emulated +
                         k->sampled_out);
    INVARIANT(k->fallbacks <= k->seen);
}

static struct htab H;
static struct hvf_bptab BT;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reader r = { data, size };
    struct hvf_counters c;
    struct xen_hvfilter_stats st;
    uint8_t hdr[4], op;
    uint64_t events = 0, total;
    unsigned int i;
    int rc;

    if ( !take(&r, hdr, sizeof(hdr)) )
        return 0;
    h_free(&H);
    memset(&H, 0, sizeof(H));
    H.nr_rules = hdr[0] % (XEN_HVFILTER_MAX_RULES + 2);
    H.nr_sets = hdr[1] % (XEN_HVFILTER_MAX_SETS + 2);
    H.nr_keys = hdr[2] | (hdr[3] << 8);
    if ( H.nr_keys > 512 )
        return 0;
    if ( !take(&r, H.rules, sizeof(H.rules[0]) * H.nr_rules) ||
         !take(&r, H.sets, sizeof(H.sets[0]) * H.nr_sets) ||
         !take(&r, H.keys, sizeof(H.keys[0]) * H.nr_keys) )
        return 0;

    rc = h_install(&H, 1);
    INVARIANT(rc == 0 || rc == -EINVAL || rc == -E2BIG || rc == -ENOSPC);
    if ( rc )
        return 0;

    memset(&BT, 0, sizeof(BT));
    hvf_bptab_init(&BT, 3);
    hvf_counters_reset(&c);

    while ( take(&r, &op, 1) )
    {
        switch ( op % OP_NR )
        {
        case OP_EVENT:
        {
            struct hvf_event ev;
            struct hvf_verdict v;
            uint8_t kind;

            memset(&ev, 0, sizeof(ev));
            if ( !take(&r, &kind, 1) || !take(&r, ev.f, sizeof(ev.f)) )
                break;
            ev.kind = kind % XEN_HVFILTER_EV_NR;
            hvf_eval(H.t, &BT, &c, &ev, &v);
            events++;
            INVARIANT(v.action == XEN_HVFILTER_ACT_FORWARD ||
                      v.action == XEN_HVFILTER_ACT_PASS ||
                      v.action == XEN_HVFILTER_ACT_EMULATE);
            INVARIANT(v.rule >= -1 && v.rule < (int)H.nr_rules);
            if ( v.rule >= 0 )
                INVARIANT(H.rules[v.rule].kinds & (1u << ev.kind));
            if ( v.action == XEN_HVFILTER_ACT_EMULATE )
            {
                INVARIANT(ev.kind == XEN_HVFILTER_EV_BREAKPOINT);
                INVARIANT(v.insn_len >= 1 &&
                          v.insn_len <= XEN_HVFILTER_MAX_INSN_LEN);
            }
            break;
        }

        case OP_SET_ADD:
        case OP_SET_REMOVE:
        {
            uint8_t set, n;
            uint64_t keys[8];
            unsigned int before;

            if ( !take(&r, &set, 1) || !take(&r, &n, 1) )
                break;
            n %= 9;
            if ( !take(&r, keys, sizeof(keys[0]) * n) )
                break;
            set %= XEN_HVFILTER_MAX_SETS + 1;
            before = set < H.nr_sets ? H.t->sets[set].hash.count : 0;
            if ( op % OP_NR == OP_SET_ADD )
            {
                rc = hvf_set_add(H.t, set, keys, n);
                INVARIANT(rc == 0 || rc == -ENOENT || rc == -ENOSPC);
                for ( i = 0; rc == 0 && i < n; i++ )
                    INVARIANT(hvf_set_contains(H.t, set, keys[i]));
                if ( rc == -ENOSPC )
                    INVARIANT(H.t->sets[set].hash.count == before);
            }
            else
            {
                rc = hvf_set_remove(H.t, set, keys, n);
                INVARIANT(rc == 0 || rc == -ENOENT);
                for ( i = 0; rc == 0 && i < n; i++ )
                    INVARIANT(!hvf_set_contains(H.t, set, keys[i]));
                if ( rc )
                    INVARIANT(set >= H.nr_sets ||
                              H.t->sets[set].hash.count == before);
            }
            if ( set < H.nr_sets )
                INVARIANT(H.t->sets[set].hash.count <=
                          H.t->sets[set].hash.capacity);
            break;
        }

        case OP_SET_FLUSH:
        {
            uint8_t set;

            if ( !take(&r, &set, 1) )
                break;
            rc = hvf_set_flush(H.t, set % (XEN_HVFILTER_MAX_SETS + 1));
            INVARIANT(rc == 0 || rc == -ENOENT);
            break;
        }

        case OP_BP_ADD:
        {
            struct xen_hvfilter_bp bp;

            if ( !take(&r, &bp, sizeof(bp)) )
                break;
            bp.gpa &= 0xffff;           /* let events hit some of them */
            rc = hvf_bp_add(&BT, &bp);
            INVARIANT(rc == 0 || rc == -EINVAL || rc == -EEXIST ||
                      rc == -ENOSPC);
            if ( rc == 0 )
                INVARIANT(hvf_bp_find(&BT, bp.gpa) != NULL);
            break;
        }

        case OP_BP_REMOVE:
        {
            uint16_t gpa;

            if ( !take(&r, &gpa, sizeof(gpa)) )
                break;
            rc = hvf_bp_remove(&BT, gpa);
            INVARIANT(rc == 0 || rc == -ENOENT);
            INVARIANT(hvf_bp_find(&BT, gpa) == NULL);
            break;
        }
        }
    }

    memset(&st, 0, sizeof(st));
    st.generation = 1;
    hvf_stats_add(&st, &c);
    total = 0;
    for ( i = 0; i < XEN_HVFILTER_EV_NR; i++ )
    {
        check_counts(&st.kinds[i]);
        total += st.kinds[i].seen;
    }
    INVARIANT(total == events);
    check_counts(&st.unmatched);
    total = st.unmatched.seen;
    for ( i = 0; i < XEN_HVFILTER_MAX_RULES; i++ )
    {
        check_counts(&st.rules[i]);
        total += st.rules[i].seen;
    }
    INVARIANT(total == events);

    h_free(&H);
    return 0;
}

#ifdef HVF_FUZZ_SEEDS
/* Write a few valid inputs as the seed corpus. */

static FILE *seed_open(const char *dir, const char *name)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if ( !f )
    {
        perror(path);
        exit(1);
    }
    return f;
}

static void seed_table(FILE *f)
{
    uint8_t hdr[4] = { H.nr_rules, H.nr_sets, H.nr_keys & 0xff,
                       H.nr_keys >> 8 };

    /* A seed is only useful if its table gets past the checks. */
    if ( h_install(&H, 1) )
    {
        fprintf(stderr, "seed table rejected\n");
        exit(1);
    }
    h_free(&H);

    fwrite(hdr, 1, sizeof(hdr), f);
    fwrite(H.rules, sizeof(H.rules[0]), H.nr_rules, f);
    fwrite(H.sets, sizeof(H.sets[0]), H.nr_sets, f);
    fwrite(H.keys, sizeof(H.keys[0]), H.nr_keys, f);
}

static void seed_event(FILE *f, unsigned int kind, uint64_t cr3,
                       uint64_t new_value, uint64_t old_value, uint64_t gfn,
                       uint64_t gla)
{
    uint8_t b[2] = { OP_EVENT, kind };
    uint64_t fields[XEN_HVFILTER_FIELD_NR] = { 0 };

    fields[XEN_HVFILTER_FIELD_CR3] = cr3;
    fields[XEN_HVFILTER_FIELD_NEW_VALUE] = new_value;
    fields[XEN_HVFILTER_FIELD_OLD_VALUE] = old_value;
    fields[XEN_HVFILTER_FIELD_GFN] = gfn;
    fields[XEN_HVFILTER_FIELD_GLA] = gla;
    fwrite(b, 1, sizeof(b), f);
    fwrite(fields, sizeof(fields), 1, f);
}

int main(int argc, char **argv)
{
    struct xen_hvfilter_rule *r;
    struct xen_hvfilter_bp bp;
    FILE *f;
    unsigned int i;
    const uint64_t mask = ~(0xfffULL | (1ULL << 12) | (1ULL << 63));

    if ( argc != 2 )
    {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }

    /* 1: process-bound CR3 and breakpoints, with breakpoints registered. */
    memset(&H, 0, sizeof(H));
    h_set(&H, "target", mask, 8);
    h_key(&H, 0x200000);
    h_key(&H, 0x204000);
    r = h_rule(&H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_PASS);
    h_in_set(r, XEN_HVFILTER_FIELD_NEW_VALUE, 0);
    h_in_set(r, XEN_HVFILTER_FIELD_OLD_VALUE, 0);
    r = h_rule(&H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD);
    h_in_set(r, XEN_HVFILTER_FIELD_NEW_VALUE, 0);
    r = h_rule(&H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD);
    h_in_set(r, XEN_HVFILTER_FIELD_OLD_VALUE, 0);
    h_rule(&H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_PASS);
    r = h_rule(&H, KIND(BREAKPOINT), XEN_HVFILTER_ACT_FORWARD);
    h_in_set(r, XEN_HVFILTER_FIELD_CR3, 0);
    r = h_rule(&H, KIND(BREAKPOINT), XEN_HVFILTER_ACT_EMULATE);
    r->fallback = XEN_HVFILTER_ACT_PASS;
    f = seed_open(argv[1], "process-bound");
    seed_table(f);
    memset(&bp, 0, sizeof(bp));
    bp.gpa = 0x1234;
    bp.insn_len = 3;
    bp.insn[0] = 0x48;
    bp.insn[1] = 0x01;
    bp.insn[2] = 0xd8;
    fputc(OP_BP_ADD, f);
    fwrite(&bp, sizeof(bp), 1, f);
    for ( i = 0; i < 16; i++ )
    {
        uint64_t cr3 = 0x200000 + (i % 4) * 0x4000;

        seed_event(f, XEN_HVFILTER_EV_CR3_WRITE, cr3, cr3 + 0x4000, cr3, 0, 0);
        seed_event(f, XEN_HVFILTER_EV_BREAKPOINT, cr3, 0, 0, 1, 0x234);
    }
    fclose(f);

    /* 2: every comparison, negation, sampling and set updates. */
    memset(&H, 0, sizeof(H));
    h_set(&H, "vcpus", 0xff, 4);
    h_key(&H, 1);
    r = h_rule(&H, KIND(MSR_WRITE), XEN_HVFILTER_ACT_SAMPLE);
    r->sample = 3;
    h_cond(r, XEN_HVFILTER_FIELD_INDEX, XEN_HVFILTER_CMP_RANGE, ~0ULL,
           0xc0000080, 0xc0000084);
    h_in_set(r, XEN_HVFILTER_FIELD_VCPU, 0)->flags = XEN_HVFILTER_COND_NEGATE;
    r = h_rule(&H, KIND(CR4_WRITE) | KIND(CR0_WRITE), XEN_HVFILTER_ACT_PASS);
    h_cond(r, XEN_HVFILTER_FIELD_NEW_VALUE, XEN_HVFILTER_CMP_ANY_BITS,
           0x300000, 0, 0);
    r = h_rule(&H, KIND(CPUID), XEN_HVFILTER_ACT_PASS);
    h_cond(r, XEN_HVFILTER_FIELD_INDEX, XEN_HVFILTER_CMP_EQ, ~0ULL, 1, 0);
    h_cond(r, XEN_HVFILTER_FIELD_CPL, XEN_HVFILTER_CMP_RANGE, 3, 0, 3);
    f = seed_open(argv[1], "operators");
    seed_table(f);
    for ( i = 0; i < 8; i++ )
    {
        uint8_t add[2 + 8] = { OP_SET_ADD, 0, 1 };

        add[3] = i;
        fwrite(add, 1, sizeof(add), f);
        seed_event(f, XEN_HVFILTER_EV_MSR_WRITE, 0, i << 20, 0, 0, 0);
        seed_event(f, XEN_HVFILTER_EV_CR4_WRITE, 0, i << 20, 0, 0, 0);
        seed_event(f, XEN_HVFILTER_EV_CPUID, 0, 0, 0, 0, 0);
    }
    fputc(OP_SET_FLUSH, f);
    fputc(0, f);
    fclose(f);

    /* 3: no rules at all. */
    memset(&H, 0, sizeof(H));
    f = seed_open(argv[1], "empty");
    seed_table(f);
    seed_event(f, XEN_HVFILTER_EV_GUEST_REQUEST, 1, 2, 3, 4, 5);
    fclose(f);
    return 0;
}
#endif
