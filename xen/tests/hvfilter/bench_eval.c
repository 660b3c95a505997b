/* SPDX-License-Identifier: MIT */
/*
 * Cost of the hvfilter evaluator per event (a benchmark, not a test).
 *
 * Cases:
 *  - process-bound: the rules a process-bound monitor installs (CR3 switches
 *    entering or leaving the target forwarded, others passed; breakpoints in
 *    the target forwarded, others emulated), with the target set holding 1,
 *    64, 1024 or 4096 page-table roots, over a stream of CR3 writes and
 *    breakpoint hits of many processes;
 *  - worst case: the largest table the limits allow, every rule applying to
 *    the event, every condition a set lookup in a full set, and every rule
 *    failing only on its last condition, so that all
 *    XEN_HVFILTER_MAX_TOTAL_CONDS conditions are evaluated and nothing
 *    matches.
 *
 * Each case runs REPEATS times over EVENTS events; the median is reported.
 * Prints a table and writes a JSON list of records to the file given.
 */

#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "harness.h"

#define EVENTS   (1u << 20)          /* per repeat: 1,048,576 */
#define REPEATS  11
#define NVALS    8192                /* distinct CR3 values in the stream */

#define MASK_PROCESS (~(0xfffULL | (1ULL << 12) | (1ULL << 63)))

static struct htab H;
static struct hvf_bptab BT;
static uint64_t vals[NVALS];
static volatile unsigned int sink;

struct result {
    const char *name;
    unsigned int rules, conds, set_size;
    double median, min, max;
};

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Page-table root of process i: 8 KiB aligned pairs, like Linux with KPTI. */
static uint64_t root(unsigned int i)
{
    return 0x10000000ULL + (uint64_t)i * 0x2000;
}

/*
 * Run the stream: alternating CR3 writes and breakpoint hits, the CR3
 * values cycling through vals[] (user and kernel roots, PCID bits set).
 */
static double run_stream(unsigned int kinds_mode)
{
    struct hvf_counters *c = calloc(1, sizeof(*c));
    struct hvf_event ev;
    struct hvf_verdict v;
    double t0, t1;
    unsigned int i, acc = 0;
    uint64_t prev = vals[0];

    memset(&ev, 0, sizeof(ev));
    ev.f[XEN_HVFILTER_FIELD_GFN] = 0x1234;
    ev.f[XEN_HVFILTER_FIELD_GLA] = 0xffffffff81234560ULL;
    t0 = now_ns();
    for ( i = 0; i < EVENTS; i++ )
    {
        uint64_t cr3 = vals[i & (NVALS - 1)];

        if ( kinds_mode == 0 && (i & 1) )
        {
            ev.kind = XEN_HVFILTER_EV_BREAKPOINT;
            ev.f[XEN_HVFILTER_FIELD_CR3] = prev;
        }
        else
        {
            ev.kind = XEN_HVFILTER_EV_CR3_WRITE;
            ev.f[XEN_HVFILTER_FIELD_CR3] = prev;
            ev.f[XEN_HVFILTER_FIELD_OLD_VALUE] = prev;
            ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = cr3;
            prev = cr3;
        }
        hvf_eval(H.t, &BT, c, &ev, &v);
        acc += v.action;
    }
    t1 = now_ns();
    sink = acc;
    free(c);
    return (t1 - t0) / EVENTS;
}

static void measure(struct result *r, unsigned int kinds_mode)
{
    double t[REPEATS];
    unsigned int i;

    run_stream(kinds_mode);                   /* warm up */
    for ( i = 0; i < REPEATS; i++ )
        t[i] = run_stream(kinds_mode);
    qsort(t, REPEATS, sizeof(t[0]), cmp_double);
    r->median = t[REPEATS / 2];
    r->min = t[0];
    r->max = t[REPEATS - 1];
}

static void process_bound(struct result *r, unsigned int set_size)
{
    struct xen_hvfilter_rule *ru;
    struct xen_hvfilter_bp bp;
    unsigned int i, s;

    h_free(&H);
    memset(&H, 0, sizeof(H));
    s = h_set(&H, "target", MASK_PROCESS, set_size);
    for ( i = 0; i < set_size; i++ )
        h_key(&H, root(i * 7));               /* every 7th process */
    ru = h_rule(&H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_PASS);
    h_in_set(ru, XEN_HVFILTER_FIELD_NEW_VALUE, s);
    h_in_set(ru, XEN_HVFILTER_FIELD_OLD_VALUE, s);
    ru = h_rule(&H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD);
    h_in_set(ru, XEN_HVFILTER_FIELD_NEW_VALUE, s);
    ru = h_rule(&H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD);
    h_in_set(ru, XEN_HVFILTER_FIELD_OLD_VALUE, s);
    h_rule(&H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_PASS);
    ru = h_rule(&H, KIND(BREAKPOINT), XEN_HVFILTER_ACT_FORWARD);
    h_in_set(ru, XEN_HVFILTER_FIELD_CR3, s);
    ru = h_rule(&H, KIND(BREAKPOINT), XEN_HVFILTER_ACT_EMULATE);
    ru->fallback = XEN_HVFILTER_ACT_PASS;
    if ( h_install(&H, 1) )
        abort();

    memset(&BT, 0, sizeof(BT));
    hvf_bptab_init(&BT, 7);
    memset(&bp, 0, sizeof(bp));
    bp.gpa = 0x1234560;
    bp.insn_len = 4;
    bp.insn[0] = 0x48;
    bp.insn[1] = 0x83;
    bp.insn[2] = 0xc0;
    bp.insn[3] = 0x01;
    if ( hvf_bp_add(&BT, &bp) )
        abort();

    /* Processes 0 .. 7*set_size: about one in seven is a target. */
    for ( i = 0; i < NVALS; i++ )
        vals[i] = root(rnd() % (7 * set_size + 1)) |
                  ((rnd() & 1) << 12) | (rnd() & 0xfff);

    r->name = "process-bound";
    r->rules = H.nr_rules;
    r->conds = 6;
    r->set_size = set_size;
    measure(r, 0);
}

static void worst_case(struct result *r)
{
    unsigned int nrules = XEN_HVFILTER_MAX_TOTAL_CONDS / XEN_HVFILTER_MAX_CONDS;
    unsigned int i, j, s;

    h_free(&H);
    memset(&H, 0, sizeof(H));
    for ( s = 0; s < XEN_HVFILTER_MAX_SETS; s++ )
    {
        char name[8];

        snprintf(name, sizeof(name), "s%u", s);
        h_set(&H, name, MASK_PROCESS, XEN_HVFILTER_MAX_SET_ENTRIES);
        for ( i = 0; i < XEN_HVFILTER_MAX_SET_ENTRIES; i++ )
            h_key(&H, root(i));
    }
    for ( i = 0; i < nrules; i++ )
    {
        struct xen_hvfilter_rule *ru =
            h_rule(&H, KIND(CR3_WRITE), XEN_HVFILTER_ACT_FORWARD);

        for ( j = 0; j < XEN_HVFILTER_MAX_CONDS; j++ )
        {
            struct xen_hvfilter_cond *c =
                h_in_set(ru, j & 1 ? XEN_HVFILTER_FIELD_NEW_VALUE
                                   : XEN_HVFILTER_FIELD_OLD_VALUE,
                         (i + j) % XEN_HVFILTER_MAX_SETS);

            /* The last condition fails: its set holds the value. */
            if ( j == XEN_HVFILTER_MAX_CONDS - 1 )
                c->flags = XEN_HVFILTER_COND_NEGATE;
        }
    }
    if ( h_install(&H, 1) )
        abort();
    for ( i = 0; i < NVALS; i++ )
        vals[i] = root(rnd() % XEN_HVFILTER_MAX_SET_ENTRIES) | (rnd() & 0xfff);

    r->name = "worst-case";
    r->rules = nrules;
    r->conds = XEN_HVFILTER_MAX_TOTAL_CONDS;
    r->set_size = XEN_HVFILTER_MAX_SET_ENTRIES;
    measure(r, 1);
}

int main(int argc, char **argv)
{
    static const unsigned int sizes[] = { 1, 64, 1024, 4096 };
    struct result res[5];
    unsigned int i, n = 0;
    FILE *f;

    if ( argc != 2 )
    {
        fprintf(stderr, "usage: %s OUT.json\n", argv[0]);
        return 2;
    }

    printf("hvfilter evaluator cost: %u events per repeat, median of %u\n",
           EVENTS, REPEATS);
    printf("%-14s %6s %6s %9s %12s %10s %10s\n", "case", "rules", "conds",
           "set_size", "ns/event", "min", "max");
    for ( i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++ )
    {
        process_bound(&res[n], sizes[i]);
        n++;
        printf("%-14s %6u %6u %9u %12.2f %10.2f %10.2f\n", res[n - 1].name,
               res[n - 1].rules, res[n - 1].conds, res[n - 1].set_size,
               res[n - 1].median, res[n - 1].min, res[n - 1].max);
        fflush(stdout);
    }
    worst_case(&res[n]);
    n++;
    printf("%-14s %6u %6u %9u %12.2f %10.2f %10.2f\n", res[n - 1].name,
           res[n - 1].rules, res[n - 1].conds, res[n - 1].set_size,
           res[n - 1].median, res[n - 1].min, res[n - 1].max);
    printf("flatness (4096 vs 1 entry): %.2fx; worst case: %.0f ns\n",
           res[3].median / res[0].median, res[4].median);

    f = fopen(argv[1], "w");
    if ( !f )
    {
        perror(argv[1]);
        return 1;
    }
    fprintf(f, "[\n");
    for ( i = 0; i < n; i++ )
        fprintf(f,
                "  {\"case\": \"%s\", \"rules\": %u, \"conditions\": %u, "
                "\"set_size\": %u, \"ns_per_event\": %.3f, \"min_ns\": %.3f, "
                "\"max_ns\": %.3f, \"events\": %u, \"repeats\": %u}%s\n",
                res[i].name, res[i].rules, res[i].conds, res[i].set_size,
                res[i].median, res[i].min, res[i].max, EVENTS, REPEATS,
                i + 1 < n ? "," : "");
    fprintf(f, "]\n");
    fclose(f);
    printf("wrote %s\n", argv[1]);
    h_free(&H);
    return 0;
}
