/* SPDX-License-Identifier: MIT */
/*
 * hvfilter_eval.h: the hvfilter rule evaluator, private interface.
 *
 * hvfilter_eval.c depends on nothing but this header and the public ABI
 * (public/hvfilter.h), so that the very same file is compiled into Xen, into
 * the userspace test harness (xen/tests/hvfilter) and into the Python
 * extension's simulator backend.  Its semantics are never written twice.
 *
 * Memory is the caller's: the evaluator allocates nothing.  The caller asks
 * how many bytes a table needs (hvf_table_size()), provides a zeroed buffer
 * of that size, and frees it after replacing the table.  The same holds for
 * the breakpoint table (sizeof(struct hvf_bptab)) and the per-vCPU counters
 * (sizeof(struct hvf_counters)).
 *
 * Concurrency is the caller's too.  Evaluation only reads the table and the
 * breakpoint table and writes the counters of one vCPU; every function that
 * changes a table must run while no evaluation on that table is under way
 * (Xen pauses the domain, or publishes a new table with a pointer swap).
 *
 * Every function returns 0 or a negative errno value, as documented in
 * public/hvfilter.h, and leaves its target unchanged when it fails.
 */

#ifndef HVFILTER_EVAL_H
#define HVFILTER_EVAL_H

#ifdef __XEN__
#include <xen/errno.h>
#include <xen/string.h>
#include <xen/types.h>
#include <public/hvfilter.h>
#else
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "hvfilter.h"
#endif

/* Frame size used to form a breakpoint's guest-physical address. */
#define HVF_PAGE_SHIFT 12

/* Number of evictions an insertion may try before giving up (-ENOSPC). */
#define HVF_HASH_MAX_KICKS 64

/* One event, as the evaluator sees it. */
struct hvf_event {
    unsigned int kind;                     /* XEN_HVFILTER_EV_* */
    uint64_t f[XEN_HVFILTER_FIELD_NR];     /* indexed by XEN_HVFILTER_FIELD_* */
};

/*
 * A set of 64-bit keys (with an optional 32-bit value each): a two-choice
 * cuckoo hash of 4-slot buckets.  A lookup reads exactly two buckets, one
 * cache line each, whatever the number of keys.  Buckets are sized at
 * creation for a load of at most one half.
 */
struct hvf_bucket {
    uint64_t key[XEN_HVFILTER_SET_BUCKET_SLOTS];
    uint32_t val[XEN_HVFILTER_SET_BUCKET_SLOTS];
    uint32_t used;                         /* bit i: slot i holds a key */
    uint32_t pad[3];
};

struct hvf_hash {
    struct hvf_bucket *buckets;
    uint64_t mul1, mul2;                   /* odd multipliers of the two hashes */
    unsigned int shift;                    /* 64 - log2(number of buckets) */
    uint32_t nbuckets;
    uint32_t count;                        /* keys present */
    uint32_t capacity;                     /* keys allowed */
};

struct hvf_set {
    char name[XEN_HVFILTER_SET_NAME_LEN];
    uint64_t mask;
    uint32_t epoch;                        /* batch marker for all-or-nothing adds */
    struct hvf_hash hash;
};

/* An installed table.  Built by hvf_table_init() inside caller memory. */
struct hvf_table {
    uint64_t generation;
    uint32_t nr_rules;
    uint32_t nr_sets;
    uint32_t nr_keys;                      /* keys passed at creation */
    /* Rules that apply to each kind, in table order. */
    uint8_t nr_by_kind[XEN_HVFILTER_EV_NR];
    uint8_t by_kind[XEN_HVFILTER_EV_NR][XEN_HVFILTER_MAX_RULES];
    struct xen_hvfilter_rule rules[XEN_HVFILTER_MAX_RULES];
    struct hvf_set sets[XEN_HVFILTER_MAX_SETS];
    /* The sets' buckets follow. */
};

/* Registered breakpoints, keyed by guest-physical address. */
struct hvf_bp {
    uint64_t gpa;
    uint8_t insn_len;
    uint8_t insn[16];
};

#define HVF_BP_BUCKETS (XEN_HVFILTER_MAX_BREAKPOINTS / 2)

struct hvf_bptab {
    struct hvf_hash hash;                  /* gpa -> index in bp[] */
    uint32_t nr_free;
    uint16_t free[XEN_HVFILTER_MAX_BREAKPOINTS];
    struct hvf_bp bp[XEN_HVFILTER_MAX_BREAKPOINTS];
    struct hvf_bucket buckets[HVF_BP_BUCKETS];
};

/* Counters of one vCPU (no sharing, no atomics on the event path). */
struct hvf_counters {
    uint64_t generation;                   /* table the rule counts belong to */
    struct xen_hvfilter_counts kinds[XEN_HVFILTER_EV_NR];
    struct xen_hvfilter_counts unmatched;
    struct xen_hvfilter_counts rules[XEN_HVFILTER_MAX_RULES];
    uint32_t sample_ctr[XEN_HVFILTER_MAX_RULES];
};

/* The decision for one event. */
struct hvf_verdict {
    unsigned int action;   /* XEN_HVFILTER_ACT_FORWARD, _PASS or _EMULATE */
    int rule;              /* index of the deciding rule, -1 if none matched */
    uint8_t insn_len;      /* EMULATE: the registered instruction */
    uint8_t insn[16];
};

/*
 * Check a table completely.  supported_kinds is a bitmap of the kinds this
 * CPU can raise (a rule naming another kind fails with -EOPNOTSUPP).
 * Returns 0, -EINVAL, -E2BIG or -EOPNOTSUPP; on error, *bad_rule and
 * *bad_cond (when not NULL) name the offending rule and condition (-1 when
 * the fault is not in a rule or not in a condition; a set's fault gives
 * *bad_rule = -1 and *bad_cond = -2 - set index).
 */
int hvf_table_check(const struct xen_hvfilter_rule *rules,
                    unsigned int nr_rules,
                    const struct xen_hvfilter_set *sets, unsigned int nr_sets,
                    unsigned int nr_keys, uint32_t supported_kinds,
                    int *bad_rule, int *bad_cond);

/* Bytes of memory a (checked) table with these sets needs. */
size_t hvf_table_size(const struct xen_hvfilter_set *sets,
                      unsigned int nr_sets);

/*
 * Build a checked table in mem (hvf_table_size() bytes, zeroed, 8-byte
 * aligned).  seed randomises the hashes.  Returns 0 or -ENOSPC when the
 * initial keys do not fit (the memory may then be freed).
 */
int hvf_table_init(void *mem, size_t size,
                   const struct xen_hvfilter_rule *rules, unsigned int nr_rules,
                   const struct xen_hvfilter_set *sets, unsigned int nr_sets,
                   const uint64_t *keys, unsigned int nr_keys,
                   uint64_t seed, uint64_t generation);

/* Set updates on an installed table (all-or-nothing). */
int hvf_set_add(struct hvf_table *t, unsigned int set_id,
                const uint64_t *keys, unsigned int nr);
int hvf_set_remove(struct hvf_table *t, unsigned int set_id,
                   const uint64_t *keys, unsigned int nr);
int hvf_set_flush(struct hvf_table *t, unsigned int set_id);
bool hvf_set_contains(const struct hvf_table *t, unsigned int set_id,
                      uint64_t key);

/* Breakpoints.  bt must be zeroed memory of sizeof(struct hvf_bptab). */
void hvf_bptab_init(struct hvf_bptab *bt, uint64_t seed);
int hvf_bp_check(const struct xen_hvfilter_bp *bp, bool remove);
int hvf_bp_add(struct hvf_bptab *bt, const struct xen_hvfilter_bp *bp);
int hvf_bp_remove(struct hvf_bptab *bt, uint64_t gpa);
const struct hvf_bp *hvf_bp_find(const struct hvf_bptab *bt, uint64_t gpa);
unsigned int hvf_bp_count(const struct hvf_bptab *bt);

/*
 * Decide one event.  t may be NULL (no table: forward), bt may be NULL (no
 * breakpoint registered).  Updates the vCPU's counters c.  Constant-bounded:
 * at most XEN_HVFILTER_MAX_TOTAL_CONDS conditions, each O(1).
 */
void hvf_eval(const struct hvf_table *t, const struct hvf_bptab *bt,
              struct hvf_counters *c, const struct hvf_event *ev,
              struct hvf_verdict *v);

/*
 * Xen could not execute the registered bytes of an EMULATE verdict and
 * forwards the event instead: move it from `emulated` to `forwarded` (and
 * count a fallback) in the kind's and the rule's counters, and turn the
 * verdict into FORWARD.
 */
void hvf_eval_emulate_failed(struct hvf_counters *c,
                             const struct hvf_event *ev,
                             struct hvf_verdict *v);

/* Zero all counters of one vCPU. */
void hvf_counters_reset(struct hvf_counters *c);

/*
 * Add one vCPU's counters to out (rule and unmatched counts only when they
 * belong to generation).  Start from a zeroed out with out->generation and
 * out->nr_rules set by the caller.
 */
void hvf_stats_add(struct xen_hvfilter_stats *out,
                   const struct hvf_counters *c);

/* Kinds each field is defined for, and comparisons allowed per field. */
extern const uint32_t hvf_field_kinds[XEN_HVFILTER_FIELD_NR];
extern const uint8_t hvf_field_cmps[XEN_HVFILTER_FIELD_NR];
/* Kinds each action may be applied to. */
extern const uint32_t hvf_action_kinds[XEN_HVFILTER_ACT_NR];

#endif /* HVFILTER_EVAL_H */

/*
 * Local variables:
 * mode: C
 * c-file-style: "BSD"
 * c-basic-offset: 4
 * tab-width: 4
 * indent-tabs-mode: nil
 * End:
 */
