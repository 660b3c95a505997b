/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the hvfilter evaluator (validation, evaluation, sets,
 * breakpoints, statistics).  Built with AddressSanitizer and UBSan by
 * `make test`; prints "N passed, N failed" and exits non-zero on failure.
 */

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"

static unsigned int passed, failed;

#define CHECK(cond) do {                                                  \
    if ( cond )                                                           \
        passed++;                                                         \
    else                                                                  \
    {                                                                     \
        failed++;                                                         \
        fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__,        \
                __LINE__, __func__, #cond);                               \
    }                                                                     \
} while ( 0 )

#define CHECK_EQ(a, b) do {                                               \
    long long a_ = (long long)(a), b_ = (long long)(b);                   \
    if ( a_ == b_ )                                                       \
        passed++;                                                         \
    else                                                                  \
    {                                                                     \
        failed++;                                                         \
        fprintf(stderr, "%s:%d: %s: %s == %lld, expected %s == %lld\n",   \
                __FILE__, __LINE__, __func__, #a, a_, #b, b_);            \
    }                                                                     \
} while ( 0 )

#define MASK_PROCESS (~(0xfffULL | (1ULL << 12) | (1ULL << 63)))

static struct htab *H;
static struct hvf_counters C;
static struct hvf_bptab *BT;

static void reset(void)
{
    h_free(H);
    memset(H, 0, sizeof(*H));
    hvf_counters_reset(&C);
    memset(BT, 0, sizeof(*BT));
    hvf_bptab_init(BT, 42);
}

static struct hvf_verdict eval(const struct hvf_event *ev)
{
    struct hvf_verdict v;

    hvf_eval(H->t, BT, &C, ev, &v);
    return v;
}

static unsigned int action_of(const struct hvf_event *ev)
{
    return eval(ev).action;
}

/* ---------------------------------------------------------------------- */

static void test_abi_sizes(void)
{
    CHECK_EQ(sizeof(struct xen_hvfilter_cond), 32);
    CHECK_EQ(sizeof(struct xen_hvfilter_rule), 16 + 32 * XEN_HVFILTER_MAX_CONDS);
    CHECK_EQ(sizeof(struct xen_hvfilter_set), 40);
    CHECK_EQ(sizeof(struct xen_hvfilter_bp), 32);
    CHECK_EQ(sizeof(struct xen_hvfilter_counts), 48);
    CHECK_EQ(sizeof(struct xen_hvfilter_stats),
             16 + 48 * (XEN_HVFILTER_EV_NR + 1 + XEN_HVFILTER_MAX_RULES));
    CHECK_EQ(sizeof(struct xen_hvfilter_info), 64);
    CHECK_EQ(sizeof(struct xen_hvfilter_table), 40);
    CHECK_EQ(sizeof(struct xen_domctl_hvfilter_op), 72);
    CHECK(sizeof(struct xen_domctl_hvfilter_op) <= 128);
    CHECK_EQ(offsetof(struct xen_hvfilter_cond, mask), 8);
    CHECK_EQ(offsetof(struct xen_hvfilter_rule, conds), 16);
    CHECK_EQ(offsetof(struct xen_domctl_hvfilter_op, u), 8);
}

static void test_no_table_forwards(void)
{
    struct hvf_event ev = h_event(XEN_HVFILTER_EV_CR3_WRITE, 0x1000);
    struct hvf_verdict v;

    reset();
    v = eval(&ev);
    CHECK_EQ(v.action, XEN_HVFILTER_ACT_FORWARD);
    CHECK_EQ(v.rule, -1);
    CHECK_EQ(C.kinds[XEN_HVFILTER_EV_CR3_WRITE].seen, 1);
    CHECK_EQ(C.kinds[XEN_HVFILTER_EV_CR3_WRITE].forwarded, 1);
    CHECK_EQ(C.unmatched.seen, 0);                  /* no table decided it */

    /* An empty table changes nothing either. */
    CHECK_EQ(h_install(H, 1), 0);
    v = eval(&ev);
    CHECK_EQ(v.action, XEN_HVFILTER_ACT_FORWARD);
    CHECK_EQ(v.rule, -1);
    CHECK_EQ(C.unmatched.forwarded, 1);
}

static void test_eq_and_negation(void)
{
    struct xen_hvfilter_rule *r;
    struct hvf_event ev = h_event(XEN_HVFILTER_EV_CPUID, 0);

    reset();
    r = h_rule(H, KIND(CPUID), XEN_HVFILTER_ACT_PASS);
    h_cond(r, XEN_HVFILTER_FIELD_INDEX, XEN_HVFILTER_CMP_EQ, ~0ULL, 0x40000000,
           0);
    r = h_rule(H, KIND(CPUID), XEN_HVFILTER_ACT_SAMPLE);
    r->sample = 1;
    h_cond(r, XEN_HVFILTER_FIELD_INDEX, XEN_HVFILTER_CMP_EQ, ~0ULL, 7,
           0)->flags = XEN_HVFILTER_COND_NEGATE;
    CHECK_EQ(h_install(H, 1), 0);

    ev.f[XEN_HVFILTER_FIELD_INDEX] = 0x40000000;
    CHECK_EQ(eval(&ev).rule, 0);
    CHECK_EQ(action_of(&ev), XEN_HVFILTER_ACT_PASS);
    ev.f[XEN_HVFILTER_FIELD_INDEX] = 7;            /* negated: no match */
    CHECK_EQ(eval(&ev).rule, -1);
    ev.f[XEN_HVFILTER_FIELD_INDEX] = 8;            /* != 7: rule 1 */
    CHECK_EQ(eval(&ev).rule, 1);
    CHECK_EQ(action_of(&ev), XEN_HVFILTER_ACT_FORWARD); /* sample 1 */
}

static void test_range(void)
{
    struct xen_hvfilter_rule *r;
    struct hvf_event ev = h_event(XEN_HVFILTER_EV_MSR_WRITE, 0);

    reset();
    r = h_rule(H, KIND(MSR_WRITE), XEN_HVFILTER_ACT_PASS);
    h_cond(r, XEN_HVFILTER_FIELD_INDEX, XEN_HVFILTER_CMP_RANGE, 0xffffffff,
           0xc0000080, 0xc0000084);
    r = h_rule(H, KIND(MSR_WRITE), XEN_HVFILTER_ACT_PASS);
    h_cond(r, XEN_HVFILTER_FIELD_NEW_VALUE, XEN_HVFILTER_CMP_RANGE, 0xff,
           0x10, 0x20)->flags = XEN_HVFILTER_COND_NEGATE;
    CHECK_EQ(h_install(H, 1), 0);

    ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = 0x15;
    ev.f[XEN_HVFILTER_FIELD_INDEX] = 0xc000007f;
    CHECK_EQ(eval(&ev).rule, -1);
    ev.f[XEN_HVFILTER_FIELD_INDEX] = 0xc0000080;   /* lower bound */
    CHECK_EQ(eval(&ev).rule, 0);
    ev.f[XEN_HVFILTER_FIELD_INDEX] = 0xc0000084;   /* upper bound */
    CHECK_EQ(eval(&ev).rule, 0);
    ev.f[XEN_HVFILTER_FIELD_INDEX] = 0x1c0000082;  /* masked into range */
    CHECK_EQ(eval(&ev).rule, 0);
    ev.f[XEN_HVFILTER_FIELD_INDEX] = 0xc0000085;
    CHECK_EQ(eval(&ev).rule, -1);
    ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = 0x1ff15;  /* mask 0xff: 0x15 in range */
    CHECK_EQ(eval(&ev).rule, -1);
    ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = 0x21;     /* outside: negation holds */
    CHECK_EQ(eval(&ev).rule, 1);
}

static void test_any_bits(void)
{
    struct xen_hvfilter_rule *r;
    struct hvf_event ev = h_event(XEN_HVFILTER_EV_CR4_WRITE, 0);

    reset();
    /* Forward CR4 writes that touch SMEP (bit 20) or SMAP (bit 21). */
    r = h_rule(H, KIND(CR4_WRITE), XEN_HVFILTER_ACT_FORWARD);
    h_cond(r, XEN_HVFILTER_FIELD_NEW_VALUE, XEN_HVFILTER_CMP_ANY_BITS,
           3ULL << 20, 0, 0)->flags = XEN_HVFILTER_COND_NEGATE;
    h_rule(H, KIND(CR4_WRITE), XEN_HVFILTER_ACT_PASS);
    CHECK_EQ(h_install(H, 1), 0);

    ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = 1ULL << 20;
    CHECK_EQ(action_of(&ev), XEN_HVFILTER_ACT_PASS);
    ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = 0x6f0;    /* SMEP/SMAP cleared */
    CHECK_EQ(action_of(&ev), XEN_HVFILTER_ACT_FORWARD);
    CHECK_EQ(eval(&ev).rule, 0);
}

static void test_cpl_vcpu_rip(void)
{
    struct xen_hvfilter_rule *r;
    struct hvf_event ev = h_event(XEN_HVFILTER_EV_GUEST_REQUEST, 0);

    reset();
    r = h_rule(H, KIND(GUEST_REQUEST), XEN_HVFILTER_ACT_PASS);
    h_cond(r, XEN_HVFILTER_FIELD_CPL, XEN_HVFILTER_CMP_EQ, 3, 3, 0);
    h_cond(r, XEN_HVFILTER_FIELD_VCPU, XEN_HVFILTER_CMP_RANGE, ~0ULL, 2, 3);
    h_cond(r, XEN_HVFILTER_FIELD_RIP, XEN_HVFILTER_CMP_RANGE, ~0ULL,
           0x400000, 0x4fffff);
    CHECK_EQ(h_install(H, 1), 0);

    ev.f[XEN_HVFILTER_FIELD_CPL] = 3;
    ev.f[XEN_HVFILTER_FIELD_VCPU] = 2;
    ev.f[XEN_HVFILTER_FIELD_RIP] = 0x401000;
    CHECK_EQ(eval(&ev).rule, 0);
    ev.f[XEN_HVFILTER_FIELD_CPL] = 0;
    CHECK_EQ(eval(&ev).rule, -1);
    ev.f[XEN_HVFILTER_FIELD_CPL] = 3;
    ev.f[XEN_HVFILTER_FIELD_VCPU] = 4;
    CHECK_EQ(eval(&ev).rule, -1);
    ev.f[XEN_HVFILTER_FIELD_VCPU] = 3;
    ev.f[XEN_HVFILTER_FIELD_RIP] = 0x500000;
    CHECK_EQ(eval(&ev).rule, -1);
}

/*
 * A process is a set of CR3 values: PCID in bits 0-11, the KPTI user/kernel
 * root bit 12 and the no-flush hint bit 63 must all be masked off.
 */
static void test_process_masks(void)
{
    struct xen_hvfilter_rule *r;
    struct hvf_event ev;
    unsigned int s;
    const uint64_t root = 0x12345000ULL & ~(1ULL << 12);

    reset();
    s = h_set(H, "target", MASK_PROCESS, 16);
    h_key(H, root | 0x5);                          /* stored masked */
    r = h_rule(H, KIND(BREAKPOINT), XEN_HVFILTER_ACT_FORWARD);
    h_in_set(r, XEN_HVFILTER_FIELD_CR3, s);
    r = h_rule(H, KIND(BREAKPOINT), XEN_HVFILTER_ACT_PASS);
    CHECK_EQ(h_install(H, 1), 0);

    ev = h_event(XEN_HVFILTER_EV_BREAKPOINT, root);
    CHECK_EQ(eval(&ev).rule, 0);
    ev.f[XEN_HVFILTER_FIELD_CR3] = root | 0x123;              /* PCID */
    CHECK_EQ(eval(&ev).rule, 0);
    ev.f[XEN_HVFILTER_FIELD_CR3] = root | (1ULL << 12);       /* KPTI user */
    CHECK_EQ(eval(&ev).rule, 0);
    ev.f[XEN_HVFILTER_FIELD_CR3] = root | (1ULL << 63) | 1;   /* no-flush */
    CHECK_EQ(eval(&ev).rule, 0);
    ev.f[XEN_HVFILTER_FIELD_CR3] = root + 0x2000;             /* next process */
    CHECK_EQ(eval(&ev).rule, 1);
    CHECK(hvf_set_contains(H->t, s, root | (1ULL << 12)));
    CHECK(!hvf_set_contains(H->t, s, root + 0x2000));

    /* The same with an EQ condition and the mask on the condition. */
    reset();
    r = h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD);
    h_cond(r, XEN_HVFILTER_FIELD_NEW_VALUE, XEN_HVFILTER_CMP_EQ,
           MASK_PROCESS, root, 0);
    CHECK_EQ(h_install(H, 1), 0);
    ev = h_event(XEN_HVFILTER_EV_CR3_WRITE, 0);
    ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = root | (1ULL << 12) | 0xabc;
    CHECK_EQ(eval(&ev).rule, 0);
    ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = root ^ (1ULL << 13);
    CHECK_EQ(eval(&ev).rule, -1);
}

/*
 * Process-bound CR3 monitoring: forward a switch that enters or leaves the
 * target, pass every other CR3 write (including KPTI flips inside it).
 */
static void test_process_bound_cr3(void)
{
    struct xen_hvfilter_rule *r;
    struct hvf_event ev = h_event(XEN_HVFILTER_EV_CR3_WRITE, 0);
    unsigned int s;
    const uint64_t t = 0x100000, o = 0x200000;

    reset();
    s = h_set(H, "target", MASK_PROCESS, 4);
    h_key(H, t);
    r = h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_PASS);  /* inside */
    h_in_set(r, XEN_HVFILTER_FIELD_NEW_VALUE, s);
    h_in_set(r, XEN_HVFILTER_FIELD_OLD_VALUE, s);
    r = h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD); /* enter */
    h_in_set(r, XEN_HVFILTER_FIELD_NEW_VALUE, s);
    r = h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD); /* leave */
    h_in_set(r, XEN_HVFILTER_FIELD_OLD_VALUE, s);
    h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_PASS);
    CHECK_EQ(h_install(H, 1), 0);

#define SW(old, new) (ev.f[XEN_HVFILTER_FIELD_OLD_VALUE] = (old),        \
                      ev.f[XEN_HVFILTER_FIELD_CR3] = (old),              \
                      ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = (new),        \
                      action_of(&ev))
    CHECK_EQ(SW(o, t), XEN_HVFILTER_ACT_FORWARD);
    CHECK_EQ(SW(t, t | 0x1000), XEN_HVFILTER_ACT_PASS);
    CHECK_EQ(SW(t | 0x1000, t), XEN_HVFILTER_ACT_PASS);
    CHECK_EQ(SW(t, o), XEN_HVFILTER_ACT_FORWARD);
    CHECK_EQ(SW(o, o + 0x2000), XEN_HVFILTER_ACT_PASS);
    CHECK_EQ(SW(o | 0x1000, o), XEN_HVFILTER_ACT_PASS);
#undef SW
    CHECK_EQ(C.kinds[XEN_HVFILTER_EV_CR3_WRITE].forwarded, 2);
    CHECK_EQ(C.kinds[XEN_HVFILTER_EV_CR3_WRITE].passed, 4);
    CHECK_EQ(C.rules[1].forwarded, 1);
    CHECK_EQ(C.rules[2].forwarded, 1);
    CHECK_EQ(C.rules[0].passed, 2);
    CHECK_EQ(C.rules[3].passed, 2);
}

static void test_first_match_and_kinds(void)
{
    struct xen_hvfilter_rule *r;
    struct hvf_event ev = h_event(XEN_HVFILTER_EV_CR3_WRITE, 0x5000);

    reset();
    r = h_rule(H, KIND(CPUID), XEN_HVFILTER_ACT_PASS);     /* other kind */
    r = h_rule(H, KIND(CR3_WRITE) | KIND(CR0_WRITE), XEN_HVFILTER_ACT_FORWARD);
    h_cond(r, XEN_HVFILTER_FIELD_CR3, XEN_HVFILTER_CMP_EQ, ~0ULL, 0x5000, 0);
    h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_PASS);     /* also matches */
    CHECK_EQ(h_install(H, 1), 0);

    CHECK_EQ(eval(&ev).rule, 1);
    CHECK_EQ(action_of(&ev), XEN_HVFILTER_ACT_FORWARD);
    ev.f[XEN_HVFILTER_FIELD_CR3] = 0x6000;
    CHECK_EQ(eval(&ev).rule, 2);
    ev.kind = XEN_HVFILTER_EV_CR0_WRITE;
    CHECK_EQ(eval(&ev).rule, -1);
    ev.kind = XEN_HVFILTER_EV_MSR_WRITE;                   /* no rule */
    CHECK_EQ(eval(&ev).rule, -1);
    CHECK_EQ(action_of(&ev), XEN_HVFILTER_ACT_FORWARD);

    /* The same rules in the other order: the catch-all now decides. */
    reset();
    h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_PASS);
    r = h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD);
    h_cond(r, XEN_HVFILTER_FIELD_CR3, XEN_HVFILTER_CMP_EQ, ~0ULL, 0x5000, 0);
    CHECK_EQ(h_install(H, 1), 0);
    ev.kind = XEN_HVFILTER_EV_CR3_WRITE;
    ev.f[XEN_HVFILTER_FIELD_CR3] = 0x5000;
    CHECK_EQ(eval(&ev).rule, 0);
    CHECK_EQ(action_of(&ev), XEN_HVFILTER_ACT_PASS);
}

static void test_sampling(void)
{
    struct xen_hvfilter_rule *r;
    struct hvf_event ev = h_event(XEN_HVFILTER_EV_MSR_WRITE, 0);
    struct hvf_counters c2;
    struct hvf_verdict v;
    unsigned int i, fwd = 0;

    reset();
    r = h_rule(H, KIND(MSR_WRITE), XEN_HVFILTER_ACT_SAMPLE);
    r->sample = 4;
    CHECK_EQ(h_install(H, 1), 0);

    for ( i = 0; i < 20; i++ )
    {
        v = eval(&ev);
        CHECK_EQ(v.action, (i % 4) ? XEN_HVFILTER_ACT_PASS
                                   : XEN_HVFILTER_ACT_FORWARD);
        fwd += v.action == XEN_HVFILTER_ACT_FORWARD;
    }
    CHECK_EQ(fwd, 5);
    CHECK_EQ(C.rules[0].forwarded, 5);
    CHECK_EQ(C.rules[0].sampled_out, 15);
    CHECK_EQ(C.rules[0].passed, 0);
    CHECK_EQ(C.kinds[XEN_HVFILTER_EV_MSR_WRITE].sampled_out, 15);

    /* Counters are per vCPU: another vCPU starts its own count. */
    hvf_counters_reset(&c2);
    hvf_eval(H->t, BT, &c2, &ev, &v);
    CHECK_EQ(v.action, XEN_HVFILTER_ACT_FORWARD);
}

static void test_emulate(void)
{
    struct xen_hvfilter_rule *r;
    struct xen_hvfilter_bp bp;
    struct hvf_event ev = h_event(XEN_HVFILTER_EV_BREAKPOINT, 0x3000);
    struct hvf_verdict v;

    reset();
    r = h_rule(H, KIND(BREAKPOINT), XEN_HVFILTER_ACT_EMULATE);
    r->fallback = XEN_HVFILTER_ACT_PASS;
    h_cond(r, XEN_HVFILTER_FIELD_CR3, XEN_HVFILTER_CMP_EQ, ~0ULL, 0x3000, 0);
    r = h_rule(H, KIND(BREAKPOINT), XEN_HVFILTER_ACT_EMULATE);
    CHECK_EQ(h_install(H, 1), 0);

    memset(&bp, 0, sizeof(bp));
    bp.gpa = 0x1234567;
    bp.insn_len = 3;
    bp.insn[0] = 0x48;
    bp.insn[1] = 0x89;
    bp.insn[2] = 0xe5;
    CHECK_EQ(hvf_bp_add(BT, &bp), 0);

    ev.f[XEN_HVFILTER_FIELD_GFN] = 0x1234;
    ev.f[XEN_HVFILTER_FIELD_GLA] = 0xffffffff81000567ULL;
    ev.f[XEN_HVFILTER_FIELD_RIP] = 0xffffffff81000567ULL;
    v = eval(&ev);
    CHECK_EQ(v.action, XEN_HVFILTER_ACT_EMULATE);
    CHECK_EQ(v.rule, 0);
    CHECK_EQ(v.insn_len, 3);
    CHECK(memcmp(v.insn, bp.insn, 16) == 0);

    /* No breakpoint at this address: never emulate, use the fallback. */
    ev.f[XEN_HVFILTER_FIELD_GLA] = 0xffffffff81000568ULL;
    v = eval(&ev);
    CHECK_EQ(v.action, XEN_HVFILTER_ACT_PASS);
    CHECK_EQ(v.insn_len, 0);
    ev.f[XEN_HVFILTER_FIELD_CR3] = 0x9000;                 /* rule 1 */
    v = eval(&ev);
    CHECK_EQ(v.rule, 1);
    CHECK_EQ(v.action, XEN_HVFILTER_ACT_FORWARD);          /* default fallback */
    CHECK_EQ(C.rules[0].emulated, 1);
    CHECK_EQ(C.rules[0].passed, 1);
    CHECK_EQ(C.rules[0].fallbacks, 1);
    CHECK_EQ(C.rules[1].forwarded, 1);
    CHECK_EQ(C.kinds[XEN_HVFILTER_EV_BREAKPOINT].fallbacks, 2);

    /* Xen could not run the bytes: the event moves to forwarded. */
    ev.f[XEN_HVFILTER_FIELD_CR3] = 0x3000;
    ev.f[XEN_HVFILTER_FIELD_GLA] = 0xffffffff81000567ULL;
    v = eval(&ev);
    CHECK_EQ(v.action, XEN_HVFILTER_ACT_EMULATE);
    CHECK_EQ(C.rules[0].emulated, 2);
    hvf_eval_emulate_failed(&C, &ev, &v);
    CHECK_EQ(v.action, XEN_HVFILTER_ACT_FORWARD);
    CHECK_EQ(v.insn_len, 0);
    CHECK_EQ(C.rules[0].emulated, 1);
    CHECK_EQ(C.rules[0].forwarded, 1);
    CHECK_EQ(C.rules[0].fallbacks, 2);
    CHECK_EQ(C.kinds[XEN_HVFILTER_EV_BREAKPOINT].emulated, 1);
    CHECK_EQ(C.rules[0].seen, C.rules[0].forwarded + C.rules[0].passed +
                              C.rules[0].emulated + C.rules[0].sampled_out);
    hvf_eval_emulate_failed(&C, &ev, &v);          /* not EMULATE: no-op */
    CHECK_EQ(C.rules[0].forwarded, 1);

    /* Removed breakpoint: fallback again. */
    ev.f[XEN_HVFILTER_FIELD_CR3] = 0x9000;
    ev.f[XEN_HVFILTER_FIELD_GLA] = 0xffffffff81000567ULL;
    CHECK_EQ(hvf_bp_remove(BT, bp.gpa), 0);
    CHECK_EQ(action_of(&ev), XEN_HVFILTER_ACT_FORWARD);
    hvf_eval(H->t, NULL, &C, &ev, &v);                     /* no bp table */
    CHECK_EQ(v.action, XEN_HVFILTER_ACT_FORWARD);
}

static void check_conservation(const struct xen_hvfilter_counts *k)
{
    CHECK_EQ(k->seen, k->forwarded + k->passed + k->emulated + k->sampled_out);
}

static uint64_t rng_state = 0x1234;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_statistics(void)
{
    struct xen_hvfilter_rule *r;
    struct xen_hvfilter_stats st;
    struct xen_hvfilter_bp bp;
    struct hvf_counters c2;
    struct hvf_verdict v;
    unsigned int s, i, k;
    uint64_t total_kinds = 0, total_rules = 0, fwd = 0, by_v[4] = { 0 };

    reset();
    hvf_counters_reset(&c2);
    s = h_set(H, "procs", MASK_PROCESS, 8);
    h_key(H, 0x10000);
    h_key(H, 0x30000);
    r = h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD);
    h_in_set(r, XEN_HVFILTER_FIELD_NEW_VALUE, s);
    r = h_rule(H, KIND(CR3_WRITE) | KIND(CPUID), XEN_HVFILTER_ACT_SAMPLE);
    r->sample = 3;
    h_cond(r, XEN_HVFILTER_FIELD_CR3, XEN_HVFILTER_CMP_ANY_BITS, 0x10000, 0, 0);
    r = h_rule(H, KIND(BREAKPOINT), XEN_HVFILTER_ACT_EMULATE);
    r->fallback = XEN_HVFILTER_ACT_PASS;
    h_in_set(r, XEN_HVFILTER_FIELD_CR3, s)->flags = XEN_HVFILTER_COND_NEGATE;
    h_rule(H, KIND(MSR_WRITE), XEN_HVFILTER_ACT_PASS);
    CHECK_EQ(h_install(H, 7), 0);
    memset(&bp, 0, sizeof(bp));
    bp.gpa = 0x5000;
    bp.insn_len = 1;
    bp.insn[0] = 0x90;
    CHECK_EQ(hvf_bp_add(BT, &bp), 0);

    for ( i = 0; i < 100000; i++ )
    {
        static const unsigned int kinds[] = {
            XEN_HVFILTER_EV_CR3_WRITE, XEN_HVFILTER_EV_CPUID,
            XEN_HVFILTER_EV_BREAKPOINT, XEN_HVFILTER_EV_MSR_WRITE,
            XEN_HVFILTER_EV_CR0_WRITE,
        };
        struct hvf_event ev = h_event(kinds[rnd() % 5], (rnd() % 8) << 16);

        ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = (rnd() % 8) << 16;
        ev.f[XEN_HVFILTER_FIELD_GFN] = 5 + rnd() % 2;
        hvf_eval(H->t, BT, (i & 1) ? &c2 : &C, &ev, &v);
        by_v[v.action]++;
    }

    memset(&st, 0, sizeof(st));
    st.generation = 7;
    st.nr_rules = H->nr_rules;
    hvf_stats_add(&st, &C);
    hvf_stats_add(&st, &c2);
    for ( k = 0; k < XEN_HVFILTER_EV_NR; k++ )
    {
        check_conservation(&st.kinds[k]);
        total_kinds += st.kinds[k].seen;
        fwd += st.kinds[k].forwarded;
    }
    for ( i = 0; i < XEN_HVFILTER_MAX_RULES; i++ )
    {
        check_conservation(&st.rules[i]);
        total_rules += st.rules[i].seen;
    }
    check_conservation(&st.unmatched);
    CHECK_EQ(total_kinds, 100000);
    CHECK_EQ(total_rules + st.unmatched.seen, 100000);
    CHECK_EQ(fwd, by_v[XEN_HVFILTER_ACT_FORWARD]);
    CHECK(st.rules[0].forwarded > 0);
    CHECK(st.rules[1].sampled_out > 0);
    CHECK(st.rules[2].emulated > 0);
    CHECK(st.rules[2].fallbacks > 0);
    CHECK(st.rules[3].passed > 0);
    CHECK(st.unmatched.forwarded > 0);

    /* A new table: rule counts start again, kind counts are kept. */
    CHECK_EQ(h_install(H, 8), 0);
    {
        struct hvf_event ev = h_event(XEN_HVFILTER_EV_MSR_WRITE, 0);

        hvf_eval(H->t, BT, &C, &ev, &v);
    }
    memset(&st, 0, sizeof(st));
    st.generation = 8;
    hvf_stats_add(&st, &C);
    hvf_stats_add(&st, &c2);                /* still generation 7: no rules */
    CHECK_EQ(st.rules[3].seen, 1);
    CHECK_EQ(st.rules[0].seen, 0);
    total_kinds = 0;
    for ( k = 0; k < XEN_HVFILTER_EV_NR; k++ )
        total_kinds += st.kinds[k].seen;
    CHECK_EQ(total_kinds, 100001);
}

static void test_sets(void)
{
    struct xen_hvfilter_rule *r;
    unsigned int s, i;
    uint64_t keys[8];

    reset();
    CHECK_EQ(hvf_set_add(NULL, 0, keys, 1), -ENOENT);
    s = h_set(H, "a", ~0xfffULL, 4);
    h_key(H, 0x1000);
    h_key(H, 0x1fff);                               /* duplicate once masked */
    r = h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_PASS);
    h_in_set(r, XEN_HVFILTER_FIELD_NEW_VALUE, s);
    CHECK_EQ(h_install(H, 1), 0);
    CHECK_EQ(H->t->sets[s].hash.count, 1);

    keys[0] = 0x2000;
    keys[1] = 0x3000;
    keys[2] = 0x2abc;                               /* duplicate in batch */
    CHECK_EQ(hvf_set_add(H->t, s, keys, 3), 0);
    CHECK_EQ(H->t->sets[s].hash.count, 3);
    CHECK_EQ(hvf_set_add(H->t, 1, keys, 1), -ENOENT);

    /* Capacity 4: a batch of two new keys must fail as a whole. */
    keys[0] = 0x4000;
    keys[1] = 0x5000;
    CHECK_EQ(hvf_set_add(H->t, s, keys, 2), -ENOSPC);
    CHECK_EQ(H->t->sets[s].hash.count, 3);
    CHECK(!hvf_set_contains(H->t, s, 0x4000));
    CHECK(!hvf_set_contains(H->t, s, 0x5000));
    CHECK(hvf_set_contains(H->t, s, 0x3000));

    /* Remove is all-or-nothing too. */
    keys[0] = 0x2000;
    keys[1] = 0x9000;                               /* absent */
    CHECK_EQ(hvf_set_remove(H->t, s, keys, 2), -ENOENT);
    CHECK(hvf_set_contains(H->t, s, 0x2000));
    keys[1] = 0x3000;
    keys[2] = 0x2000;                               /* twice in the batch */
    CHECK_EQ(hvf_set_remove(H->t, s, keys, 3), 0);
    CHECK(!hvf_set_contains(H->t, s, 0x2000));
    CHECK(!hvf_set_contains(H->t, s, 0x3000));
    CHECK(hvf_set_contains(H->t, s, 0x1000));
    CHECK_EQ(hvf_set_remove(H->t, 3, keys, 1), -ENOENT);

    CHECK_EQ(hvf_set_flush(H->t, s), 0);
    CHECK_EQ(H->t->sets[s].hash.count, 0);
    CHECK(!hvf_set_contains(H->t, s, 0x1000));
    CHECK_EQ(hvf_set_flush(H->t, 2), -ENOENT);
    for ( i = 0; i < 4; i++ )
        keys[i] = 0x10000 * (i + 1);
    CHECK_EQ(hvf_set_add(H->t, s, keys, 4), 0);      /* full again after flush */
}

/* Big sets: every key found, none invented, with structured keys. */
static void test_set_stress(void)
{
    static uint64_t keys[XEN_HVFILTER_MAX_SET_ENTRIES];
    unsigned int s, i, found = 0;

    reset();
    s = h_set(H, "big", MASK_PROCESS, XEN_HVFILTER_MAX_SET_ENTRIES);
    CHECK_EQ(h_install(H, 1), 0);
    /* Page-table roots are 8 KiB aligned and dense: a hostile pattern. */
    for ( i = 0; i < XEN_HVFILTER_MAX_SET_ENTRIES; i++ )
        keys[i] = 0x100000000ULL + (uint64_t)i * 0x2000;
    CHECK_EQ(hvf_set_add(H->t, s, keys, XEN_HVFILTER_MAX_SET_ENTRIES), 0);
    CHECK_EQ(H->t->sets[s].hash.count, XEN_HVFILTER_MAX_SET_ENTRIES);
    for ( i = 0; i < XEN_HVFILTER_MAX_SET_ENTRIES; i++ )
        found += hvf_set_contains(H->t, s, keys[i] | (1ULL << 12) | 0x7);
    CHECK_EQ(found, XEN_HVFILTER_MAX_SET_ENTRIES);
    found = 0;
    for ( i = 0; i < XEN_HVFILTER_MAX_SET_ENTRIES; i++ )
        found += hvf_set_contains(H->t, s, keys[i] + 0x4000000000ULL);
    CHECK_EQ(found, 0);
    keys[0] = 0x42000;
    CHECK_EQ(hvf_set_add(H->t, s, keys, 1), -ENOSPC);
    CHECK_EQ(hvf_set_remove(H->t, s, keys + 1, 2048), 0);
    CHECK_EQ(H->t->sets[s].hash.count, XEN_HVFILTER_MAX_SET_ENTRIES - 2048);
    CHECK(!hvf_set_contains(H->t, s, keys[1]));
    CHECK(hvf_set_contains(H->t, s, keys[2049]));
}

/*
 * Force the cuckoo insertion to fail: more keys than two buckets hold, all
 * hashing to the same two buckets.  The failed batch must leave the set
 * exactly as it was.
 */
static void test_cuckoo_failure_rolls_back(void)
{
    struct hvf_hash *h;
    uint64_t coll[2 * XEN_HVFILTER_SET_BUCKET_SLOTS + 1], k, batch[2];
    uint32_t x = 0, y = 0;
    unsigned int s, n = 0, i;

    reset();
    s = h_set(H, "small", ~0ULL, 64);
    CHECK_EQ(h_install(H, 1), 0);
    h = &H->t->sets[s].hash;

    for ( k = 1; n < sizeof(coll) / sizeof(coll[0]) && k < 100000000; k++ )
    {
        uint32_t b1 = (uint32_t)((k * h->mul1) >> h->shift);
        uint32_t b2 = (uint32_t)((k * h->mul2) >> h->shift);

        if ( n == 0 && b1 != b2 )
        {
            x = b1;
            y = b2;
        }
        if ( (b1 == x && b2 == y) || (b1 == y && b2 == x) )
            coll[n++] = k;
    }
    CHECK_EQ(n, sizeof(coll) / sizeof(coll[0]));
    if ( n != sizeof(coll) / sizeof(coll[0]) )
        return;

    CHECK_EQ(hvf_set_add(H->t, s, coll, n - 1), 0);  /* fills both buckets */
    batch[0] = 0xdead0000;                           /* fits elsewhere */
    batch[1] = coll[n - 1];                          /* cannot fit */
    CHECK_EQ(hvf_set_add(H->t, s, batch, 2), -ENOSPC);
    CHECK_EQ(h->count, n - 1);
    CHECK(!hvf_set_contains(H->t, s, batch[0]));
    CHECK(!hvf_set_contains(H->t, s, batch[1]));
    for ( i = 0; i < n - 1; i++ )
        CHECK(hvf_set_contains(H->t, s, coll[i]));
}

static void test_breakpoints(void)
{
    struct xen_hvfilter_bp bp;
    unsigned int i;
    int ok = 0;

    reset();
    memset(&bp, 0, sizeof(bp));
    bp.gpa = 0x1000;
    bp.insn_len = 1;
    bp.insn[0] = 0x55;
    CHECK_EQ(hvf_bp_add(BT, &bp), 0);
    CHECK_EQ(hvf_bp_add(BT, &bp), -EEXIST);
    CHECK_EQ(hvf_bp_count(BT), 1);
    CHECK(hvf_bp_find(BT, 0x1000) && hvf_bp_find(BT, 0x1000)->insn[0] == 0x55);
    CHECK(!hvf_bp_find(BT, 0x1001));
    CHECK_EQ(hvf_bp_remove(BT, 0x1001), -ENOENT);
    CHECK_EQ(hvf_bp_remove(BT, 0x1000), 0);
    CHECK_EQ(hvf_bp_remove(BT, 0x1000), -ENOENT);

    /* Invalid breakpoints. */
    bp.insn_len = 0;
    CHECK_EQ(hvf_bp_add(BT, &bp), -EINVAL);
    bp.insn_len = 16;
    CHECK_EQ(hvf_bp_add(BT, &bp), -EINVAL);
    bp.insn_len = 1;
    bp.insn[0] = 0xcc;
    CHECK_EQ(hvf_bp_add(BT, &bp), -EINVAL);
    bp.insn[0] = 0x90;
    bp.insn[5] = 1;                                 /* past insn_len */
    CHECK_EQ(hvf_bp_add(BT, &bp), -EINVAL);
    bp.insn[5] = 0;
    bp.pad[3] = 1;
    CHECK_EQ(hvf_bp_add(BT, &bp), -EINVAL);
    bp.pad[3] = 0;
    CHECK_EQ(hvf_bp_check(&bp, true), -EINVAL);     /* remove: gpa only */
    memset(&bp, 0, sizeof(bp));
    bp.gpa = 5;
    CHECK_EQ(hvf_bp_check(&bp, true), 0);
    CHECK_EQ(hvf_bp_count(BT), 0);

    /* Fill to the limit; one more is refused; slots are reused. */
    bp.insn_len = 2;
    bp.insn[0] = 0x0f;
    bp.insn[1] = 0x0b;
    for ( i = 0; i < XEN_HVFILTER_MAX_BREAKPOINTS; i++ )
    {
        bp.gpa = 0x7000000 + i * 16;
        ok += hvf_bp_add(BT, &bp) == 0;
    }
    CHECK_EQ(ok, XEN_HVFILTER_MAX_BREAKPOINTS);
    bp.gpa = 0x1;
    CHECK_EQ(hvf_bp_add(BT, &bp), -ENOSPC);
    CHECK_EQ(hvf_bp_remove(BT, 0x7000000 + 16 * 100), 0);
    CHECK_EQ(hvf_bp_add(BT, &bp), 0);
    CHECK(hvf_bp_find(BT, 0x1) && hvf_bp_find(BT, 0x1)->insn_len == 2);
    CHECK(hvf_bp_find(BT, 0x7000000 + 16 * 101) != NULL);
    CHECK_EQ(hvf_bp_count(BT), XEN_HVFILTER_MAX_BREAKPOINTS);
}

/* ---------------------------------------------------------------------- */
/* Rejection paths of hvf_table_check(). */

static int check_table(int *bad_rule, int *bad_cond)
{
    return hvf_table_check(H->rules, H->nr_rules, H->sets, H->nr_sets,
                           H->nr_keys, (1u << XEN_HVFILTER_EV_NR) - 1,
                           bad_rule, bad_cond);
}

/* A valid two-rule table that each rejection case then spoils. */
static void good_table(void)
{
    struct xen_hvfilter_rule *r;

    reset();
    h_set(H, "target", MASK_PROCESS, 8);
    h_key(H, 0x4000);
    r = h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD);
    h_in_set(r, XEN_HVFILTER_FIELD_NEW_VALUE, 0);
    r = h_rule(H, KIND(BREAKPOINT), XEN_HVFILTER_ACT_EMULATE);
    h_cond(r, XEN_HVFILTER_FIELD_CPL, XEN_HVFILTER_CMP_EQ, 3, 0, 0);
}

#define REJECT(expr, err, rule, cond) do {                                \
    int br_, bc_;                                                         \
    good_table();                                                         \
    expr;                                                                 \
    CHECK_EQ(check_table(&br_, &bc_), err);                               \
    CHECK_EQ(br_, rule);                                                  \
    CHECK_EQ(bc_, cond);                                                  \
} while ( 0 )

static void test_rejections(void)
{
    struct xen_hvfilter_rule *r1 = &H->rules[1];
    struct xen_hvfilter_cond *c0 = &H->rules[1].conds[0];
    struct xen_hvfilter_set *s0 = &H->sets[0];
    int br, bc;
    unsigned int i;

    good_table();
    CHECK_EQ(check_table(&br, &bc), 0);
    CHECK_EQ(br, -1);
    CHECK_EQ(bc, -1);

    /* Counts. */
    REJECT(H->nr_rules = XEN_HVFILTER_MAX_RULES + 1, -E2BIG, -1, -1);
    REJECT(H->nr_sets = XEN_HVFILTER_MAX_SETS + 1, -E2BIG, -1, -1);
    REJECT(H->nr_keys = 2, -EINVAL, -1, -1);

    /* Rules. */
    REJECT(r1->kinds = 0, -EINVAL, 1, -1);
    REJECT(r1->kinds |= 1u << XEN_HVFILTER_EV_NR, -EINVAL, 1, -1);
    REJECT(r1->pad0 = 1, -EINVAL, 1, -1);
    REJECT(r1->pad1 = 1, -EINVAL, 1, -1);
    REJECT(r1->action = XEN_HVFILTER_ACT_NR, -EINVAL, 1, -1);
    REJECT(r1->kinds = KIND(CR3_WRITE), -EINVAL, 1, -1);      /* emulate CR3 */
    REJECT((r1->action = XEN_HVFILTER_ACT_PASS,
            r1->kinds = KIND(MEM_ACCESS)), -EINVAL, 1, -1);
    REJECT((r1->action = XEN_HVFILTER_ACT_SAMPLE, r1->sample = 2,
            r1->kinds = KIND(MEM_ACCESS)), -EINVAL, 1, -1);
    REJECT(r1->fallback = XEN_HVFILTER_ACT_EMULATE, -EINVAL, 1, -1);
    REJECT(r1->fallback = XEN_HVFILTER_ACT_SAMPLE, -EINVAL, 1, -1);
    REJECT(H->rules[0].fallback = XEN_HVFILTER_ACT_PASS, -EINVAL, 0, -1);
    REJECT(r1->action = XEN_HVFILTER_ACT_SAMPLE, -EINVAL, 1, -1); /* sample 0 */
    REJECT(r1->sample = 3, -EINVAL, 1, -1);                /* not SAMPLE */
    REJECT(r1->nr_conds = XEN_HVFILTER_MAX_CONDS + 1, -E2BIG, 1, -1);
    REJECT(r1->conds[3].value = 1, -EINVAL, 1, 3);         /* unused cond */
    REJECT(r1->conds[XEN_HVFILTER_MAX_CONDS - 1].pad = 1, -EINVAL, 1,
           XEN_HVFILTER_MAX_CONDS - 1);

    /* Conditions. */
    REJECT(c0->field = XEN_HVFILTER_FIELD_NR, -EINVAL, 1, 0);
    REJECT(c0->cmp = XEN_HVFILTER_CMP_NR, -EINVAL, 1, 0);
    REJECT(c0->flags = 2, -EINVAL, 1, 0);
    REJECT(c0->pad = 1, -EINVAL, 1, 0);
    REJECT(c0->field = XEN_HVFILTER_FIELD_OLD_VALUE, -EINVAL, 1, 0); /* bp */
    REJECT(c0->field = XEN_HVFILTER_FIELD_SUBINDEX, -EINVAL, 1, 0);
    REJECT(c0->cmp = XEN_HVFILTER_CMP_ANY_BITS, -EINVAL, 1, 0);      /* CPL */
    REJECT((c0->cmp = XEN_HVFILTER_CMP_IN_SET, c0->mask = 0), -EINVAL, 1, 0);
    REJECT(c0->mask = 0, -EINVAL, 1, 0);
    REJECT((c0->mask = 1, c0->value = 2), -EINVAL, 1, 0);  /* value & ~mask */
    REJECT(c0->value2 = 1, -EINVAL, 1, 0);                 /* EQ: value2 */
    REJECT(c0->set_id = 1, -EINVAL, 1, 0);                 /* EQ: set */
    REJECT((c0->cmp = XEN_HVFILTER_CMP_RANGE, c0->value = 3, c0->value2 = 2),
           -EINVAL, 1, 0);
    REJECT((c0->cmp = XEN_HVFILTER_CMP_RANGE, c0->value2 = 4), -EINVAL, 1, 0);
    REJECT((c0->field = XEN_HVFILTER_FIELD_RIP,
            c0->cmp = XEN_HVFILTER_CMP_ANY_BITS, c0->value = 1), -EINVAL, 1, 0);
    REJECT(H->rules[0].conds[0].set_id = 1, -EINVAL, 0, 0); /* undeclared */
    REJECT(H->rules[0].conds[0].mask = 1, -EINVAL, 0, 0);   /* IN_SET mask */
    REJECT(H->rules[0].conds[0].value = 1, -EINVAL, 0, 0);
    REJECT((H->rules[0].conds[0].field = XEN_HVFILTER_FIELD_CPL), -EINVAL, 0, 0);

    /* Total conditions of a table. */
    good_table();
    H->nr_rules = 0;
    for ( i = 0; i < XEN_HVFILTER_MAX_TOTAL_CONDS / XEN_HVFILTER_MAX_CONDS; i++ )
    {
        struct xen_hvfilter_rule *r =
            h_rule(H, KIND(CPUID), XEN_HVFILTER_ACT_PASS);

        while ( r->nr_conds < XEN_HVFILTER_MAX_CONDS )
            h_cond(r, XEN_HVFILTER_FIELD_INDEX, XEN_HVFILTER_CMP_EQ, 1, 1, 0);
    }
    CHECK_EQ(check_table(&br, &bc), 0);
    h_cond(h_rule(H, KIND(CPUID), XEN_HVFILTER_ACT_PASS),
           XEN_HVFILTER_FIELD_INDEX, XEN_HVFILTER_CMP_EQ, 1, 1, 0);
    CHECK_EQ(check_table(&br, &bc), -E2BIG);
    CHECK_EQ(br, (int)(H->nr_rules - 1));

    /* Sets: their faults name the set as cond -2 - index. */
    REJECT(s0->name[0] = 0, -EINVAL, -1, -2);
    REJECT(memset(s0->name, 'a', sizeof(s0->name)), -EINVAL, -1, -2);
    REJECT(s0->name[10] = 'x', -EINVAL, -1, -2);           /* after the NUL */
    REJECT(s0->mask = 0, -EINVAL, -1, -2);
    REJECT((s0->capacity = 0, s0->nr_init = 0, H->nr_keys = 0), -EINVAL,
           -1, -2);
    REJECT(s0->capacity = XEN_HVFILTER_MAX_SET_ENTRIES + 1, -E2BIG, -1, -2);
    REJECT((s0->nr_init = 9, H->nr_keys = 9), -EINVAL, -1, -2);
    REJECT(s0->pad = 1, -EINVAL, -1, -2);

    /* A kind this CPU cannot raise. */
    good_table();
    H->rules[1].kinds = KIND(BREAKPOINT);
    CHECK_EQ(hvf_table_check(H->rules, H->nr_rules, H->sets, H->nr_sets,
                             H->nr_keys, KIND(CR3_WRITE), &br, &bc),
             -EOPNOTSUPP);
    CHECK_EQ(br, 1);

    /* hvf_table_init refuses a too small buffer. */
    good_table();
    {
        static uint64_t mem[4096];

        CHECK_EQ(hvf_table_init(mem, 64, H->rules, H->nr_rules, H->sets,
                                H->nr_sets, H->keys, H->nr_keys, 1, 1),
                 -EINVAL);
    }
}

/* A failed replacement leaves the installed table as it was. */
static void test_failed_replace_keeps_state(void)
{
    struct xen_hvfilter_rule *r;
    struct hvf_event ev = h_event(XEN_HVFILTER_EV_CR3_WRITE, 0x8000);
    struct hvf_table *before;

    reset();
    r = h_rule(H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_PASS);
    h_cond(r, XEN_HVFILTER_FIELD_CR3, XEN_HVFILTER_CMP_EQ, ~0ULL, 0x8000, 0);
    CHECK_EQ(h_install(H, 1), 0);
    before = H->t;
    CHECK_EQ(action_of(&ev), XEN_HVFILTER_ACT_PASS);

    r->conds[0].pad = 9;                            /* now invalid */
    CHECK_EQ(h_install(H, 2), -EINVAL);
    CHECK(H->t == before);
    CHECK_EQ(H->t->generation, 1);
    CHECK_EQ(action_of(&ev), XEN_HVFILTER_ACT_PASS);
    CHECK_EQ(C.rules[0].passed, 2);
}

int main(void)
{
    H = calloc(1, sizeof(*H));
    BT = calloc(1, sizeof(*BT));
    if ( !H || !BT )
        return 2;

    test_abi_sizes();
    test_no_table_forwards();
    test_eq_and_negation();
    test_range();
    test_any_bits();
    test_cpl_vcpu_rip();
    test_process_masks();
    test_process_bound_cr3();
    test_first_match_and_kinds();
    test_sampling();
    test_emulate();
    test_statistics();
    test_sets();
    test_set_stress();
    test_cuckoo_failure_rolls_back();
    test_breakpoints();
    test_rejections();
    test_failed_replace_keeps_state();

    h_free(H);
    free(H);
    free(BT);
    printf("evaluator: %u passed, %u failed\n", passed, failed);
    return failed ? 1 : 0;
}
