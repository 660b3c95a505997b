/* SPDX-License-Identifier: MIT */
/******************************************************************************
 * hvfilter.h
 *
 * Hypervisor-side filters for VM introspection (VMI) events.
 *
 * A privileged domain installs, per target domain, an ordered table of rules
 * that Xen evaluates where a monitor event is raised, before a vm_event ring
 * slot is claimed.  A rule names the event kinds it applies to, a conjunction
 * of conditions on the event's fields and an action: forward the event to the
 * monitor ring as stock Xen would, pass it (complete it in Xen as if nobody
 * were monitoring), emulate a breakpointed instruction from registered bytes,
 * or sample one event in N.  The first matching rule decides; an event that
 * no rule matches is forwarded, so an empty table changes nothing.
 *
 * Everything travels through one domctl, XEN_DOMCTL_hvfilter_op, whose union
 * member struct xen_domctl_hvfilter_op stays within the 128 bytes of the
 * domctl union; tables and statistics go through XEN_GUEST_HANDLE_64.
 *
 * Bounded cost by construction.  The limits below bound the work done for
 * one event, like the eBPF verifier bounds a program: at most
 * XEN_HVFILTER_MAX_TOTAL_CONDS conditions are evaluated per event, each in
 * constant time (a set lookup probes exactly two buckets of
 * XEN_HVFILTER_SET_BUCKET_SLOTS keys, whatever the set's size), and nothing
 * is allocated on the event path.
 */

#ifndef __XEN_PUBLIC_HVFILTER_H__
#define __XEN_PUBLIC_HVFILTER_H__

#if !defined(__XEN__) && !defined(__XEN_TOOLS__)
#error "hvfilter operations are intended for use by node control tools only"
#endif

#include "xen.h"

/*
 * Version of the interface below: major << 16 | minor.  Bump the major
 * half whenever a structure or a constant in this file changes
 * incompatibly; the hypervisor refuses calls whose major version differs
 * from its own with -EPROTONOSUPPORT (get_info still fills in `info`, so
 * the caller can say which side to update).  Adding a new value to an
 * enumeration, or giving a meaning to a field that had to be zero, bumps
 * the minor half only: callers that do not use the new value are
 * unaffected, and older hypervisors reject the new value with -EINVAL.
 */
#define XEN_HVFILTER_INTERFACE_VERSION 0x00010000
#define XEN_HVFILTER_VERSION_MAJOR(v)  ((v) >> 16)

/*
 * The domctl number.  Private to hvfilter and far from upstream's sequence
 * (upstream used 87..90 after 4.17) so that it cannot collide with a future
 * upstream domctl.  A hypervisor without the hvfilter patch answers -ENOSYS.
 */
#define XEN_DOMCTL_hvfilter_op 0x4846

/*
 * Limits.  They bound both memory and the cost of evaluating one event:
 *  - rules per domain, conditions per rule and conditions per table bound
 *    the number of comparisons per event (XEN_HVFILTER_MAX_TOTAL_CONDS);
 *    the worst table (every condition a lookup in a full set, every rule
 *    failing on its last condition) costs about 0.3 us per event on a
 *    2-core x86-64 VM, against 0.5-1 us for a bare VM exit; the rules of a
 *    process-bound monitor cost about 20 ns (see docs/abi.md);
 *  - sets per domain and entries per set bound the memory of a table
 *    (at most 8 x 128 KiB of buckets);
 *  - breakpoints per domain bound the breakpoint table.
 */
#define XEN_HVFILTER_MAX_RULES        64
#define XEN_HVFILTER_MAX_CONDS         8   /* per rule */
#define XEN_HVFILTER_MAX_TOTAL_CONDS  64   /* over all rules of a table */
#define XEN_HVFILTER_MAX_SETS          8
#define XEN_HVFILTER_MAX_SET_ENTRIES 4096  /* per set */
#define XEN_HVFILTER_MAX_BREAKPOINTS 1024
#define XEN_HVFILTER_MAX_INSN_LEN     15   /* x86's maximum */
#define XEN_HVFILTER_SET_NAME_LEN     16   /* including the terminating NUL */
#define XEN_HVFILTER_SET_BUCKET_SLOTS  4   /* keys probed per bucket */

/* Event kinds.  A rule's `kinds` is a bitmap of (1u << XEN_HVFILTER_EV_*). */
#define XEN_HVFILTER_EV_CR0_WRITE        0
#define XEN_HVFILTER_EV_CR3_WRITE        1
#define XEN_HVFILTER_EV_CR4_WRITE        2
#define XEN_HVFILTER_EV_XCR0_WRITE       3
#define XEN_HVFILTER_EV_MSR_WRITE        4
#define XEN_HVFILTER_EV_BREAKPOINT       5  /* software breakpoint, int3 */
#define XEN_HVFILTER_EV_SINGLESTEP       6  /* Intel (MTF) only */
#define XEN_HVFILTER_EV_DEBUG_EXCEPTION  7
#define XEN_HVFILTER_EV_CPUID            8
#define XEN_HVFILTER_EV_DESC_ACCESS      9
#define XEN_HVFILTER_EV_GUEST_REQUEST   10
#define XEN_HVFILTER_EV_MEM_ACCESS      11  /* Intel (EPT) only */
#define XEN_HVFILTER_EV_NR              12

/*
 * Event fields a condition can test.  Every event has VCPU, CR3, RIP and
 * CPL; the others exist only for some kinds (see the table of each kind):
 *
 *   kind             NEW_VALUE    OLD_VALUE   INDEX          SUBINDEX  GFN GLA
 *   CR*_WRITE        written      previous    -              -         -   -
 *   MSR_WRITE        written      previous    MSR number     -         -   -
 *   BREAKPOINT       -            -           insn length    -         yes yes
 *   SINGLESTEP       -            -           -              -         yes -
 *   DEBUG_EXCEPTION  pending_dbg  -           trap type      -         yes -
 *   CPUID            -            -           leaf           subleaf   -   -
 *   DESC_ACCESS      exit info    -           descriptor     is_write  -   -
 *   GUEST_REQUEST    -            -           -              -         -   -
 *   MEM_ACCESS       -            -           access flags   -         yes yes
 *
 * CR3 is the vCPU's CR3 when the event is raised: for a CR3 write, the
 * value being replaced (hence equal to OLD_VALUE).  CR3 values are seen as
 * the guest wrote them minus the no-flush hint (bit 63), which Xen strips.
 * For a breakpoint, GLA is the linear address of the int3 (CS base + RIP,
 * equal to RIP in 64-bit mode) and GFN its frame.
 */
#define XEN_HVFILTER_FIELD_VCPU       0
#define XEN_HVFILTER_FIELD_CR3        1
#define XEN_HVFILTER_FIELD_RIP        2
#define XEN_HVFILTER_FIELD_CPL        3
#define XEN_HVFILTER_FIELD_NEW_VALUE  4
#define XEN_HVFILTER_FIELD_OLD_VALUE  5
#define XEN_HVFILTER_FIELD_INDEX      6
#define XEN_HVFILTER_FIELD_SUBINDEX   7
#define XEN_HVFILTER_FIELD_GFN        8
#define XEN_HVFILTER_FIELD_GLA        9
#define XEN_HVFILTER_FIELD_NR        10

/*
 * Comparison operators.  With v the field's value and m the condition's mask:
 *   EQ        (v & m) == value                    (value & ~m must be 0)
 *   RANGE     value <= (v & m) <= value2          (value <= value2)
 *   ANY_BITS  (v & m) != 0                        (value, value2 zero)
 *   IN_SET    (v & set.mask) is a key of set_id   (mask, value, value2 zero)
 * VCPU and CPL take EQ and RANGE only; VCPU also takes IN_SET.
 */
#define XEN_HVFILTER_CMP_EQ        0
#define XEN_HVFILTER_CMP_RANGE     1
#define XEN_HVFILTER_CMP_ANY_BITS  2
#define XEN_HVFILTER_CMP_IN_SET    3
#define XEN_HVFILTER_CMP_NR        4

/* Condition flags. */
#define XEN_HVFILTER_COND_NEGATE  (1u << 0)  /* the condition holds if the test fails */
#define XEN_HVFILTER_COND_FLAGS   XEN_HVFILTER_COND_NEGATE

/*
 * Actions.
 *   FORWARD  send the event to the monitor ring, as without hvfilter.
 *   PASS     complete the event in Xen as if nobody monitored it: the write
 *            commits, CPUID executes, a guest-owned int3 is reinjected.  No
 *            ring slot, no vCPU pause, no wake-up of the monitor.  Not for
 *            MEM_ACCESS (the access itself is what is restricted).
 *   EMULATE  BREAKPOINT only: execute the instruction that the int3
 *            replaced, from the bytes registered with XEN_HVFILTER_OP_bp_add,
 *            inside Xen.  When no breakpoint is registered at the event's
 *            guest-physical address, the rule's `fallback` (FORWARD or PASS)
 *            applies instead: Xen never emulates from guest memory.
 *   SAMPLE   forward the first of every `sample` matching events of each
 *            vCPU, pass the others (counted as sampled_out).  Same kinds as
 *            PASS.  `sample` must be at least 1.
 */
#define XEN_HVFILTER_ACT_FORWARD  0
#define XEN_HVFILTER_ACT_PASS     1
#define XEN_HVFILTER_ACT_EMULATE  2
#define XEN_HVFILTER_ACT_SAMPLE   3
#define XEN_HVFILTER_ACT_NR       4

/* One condition: 32 bytes. */
struct xen_hvfilter_cond {
    uint8_t field;            /* IN: XEN_HVFILTER_FIELD_* */
    uint8_t cmp;              /* IN: XEN_HVFILTER_CMP_* */
    uint8_t flags;            /* IN: XEN_HVFILTER_COND_* */
    uint8_t set_id;           /* IN: IN_SET: index of the set; else 0 */
    uint32_t pad;             /* IN: must be 0 */
    uint64_aligned_t mask;    /* IN: applied to the field (EQ, RANGE, ANY_BITS) */
    uint64_aligned_t value;   /* IN: EQ: the value; RANGE: the minimum */
    uint64_aligned_t value2;  /* IN: RANGE: the maximum; else 0 */
};
typedef struct xen_hvfilter_cond xen_hvfilter_cond_t;
DEFINE_XEN_GUEST_HANDLE(xen_hvfilter_cond_t);

/*
 * One rule: 16 + 8 * 32 = 272 bytes.  Conditions past nr_conds must be all
 * zero.  A rule with no condition matches every event of its kinds.
 */
struct xen_hvfilter_rule {
    uint32_t kinds;           /* IN: bitmap of 1u << XEN_HVFILTER_EV_*, not 0 */
    uint8_t action;           /* IN: XEN_HVFILTER_ACT_* */
    uint8_t fallback;         /* IN: EMULATE: FORWARD or PASS; else 0 */
    uint8_t nr_conds;         /* IN: <= XEN_HVFILTER_MAX_CONDS */
    uint8_t pad0;             /* IN: must be 0 */
    uint32_t sample;          /* IN: SAMPLE: N >= 1; else 0 */
    uint32_t pad1;            /* IN: must be 0 */
    struct xen_hvfilter_cond conds[XEN_HVFILTER_MAX_CONDS];
};
typedef struct xen_hvfilter_rule xen_hvfilter_rule_t;
DEFINE_XEN_GUEST_HANDLE(xen_hvfilter_rule_t);

/*
 * One named set of 64-bit keys: 40 bytes.  Keys are stored masked: adding k
 * stores (k & mask), and IN_SET tests (v & mask).  `capacity` sizes the set
 * at install time; the first nr_init keys of the table's key array that are
 * not taken by earlier sets are its initial contents.
 */
struct xen_hvfilter_set {
    char name[XEN_HVFILTER_SET_NAME_LEN]; /* IN: NUL-terminated, NUL-padded, not empty */
    uint64_aligned_t mask;    /* IN: not 0 */
    uint32_t capacity;        /* IN: 1 .. XEN_HVFILTER_MAX_SET_ENTRIES */
    uint32_t nr_init;         /* IN: <= capacity */
    uint64_aligned_t pad;     /* IN: must be 0 */
};
typedef struct xen_hvfilter_set xen_hvfilter_set_t;
DEFINE_XEN_GUEST_HANDLE(xen_hvfilter_set_t);

/*
 * XEN_HVFILTER_OP_table_replace: atomically replace the domain's table
 * (rules, sets and their initial keys).  Rule statistics start again from
 * zero and the table generation is incremented; per-kind statistics and
 * registered breakpoints are kept.  nr_rules == 0 and nr_sets == 0 removes
 * the table (every event is forwarded again).
 */
struct xen_hvfilter_table {
    uint32_t nr_rules;        /* IN: <= XEN_HVFILTER_MAX_RULES */
    uint32_t nr_sets;         /* IN: <= XEN_HVFILTER_MAX_SETS */
    uint32_t nr_keys;         /* IN: sum of the sets' nr_init */
    uint32_t pad;             /* IN: must be 0 */
    XEN_GUEST_HANDLE_64(xen_hvfilter_rule_t) rules; /* IN: nr_rules rules */
    XEN_GUEST_HANDLE_64(xen_hvfilter_set_t) sets;   /* IN: nr_sets sets */
    XEN_GUEST_HANDLE_64(uint64) keys;               /* IN: nr_keys keys */
};

/*
 * XEN_HVFILTER_OP_set_add / set_remove / set_flush: change one set of the
 * installed table.  Add and remove are all-or-nothing: on error no key of
 * the batch has been added or removed.  Adding a key already present (after
 * masking) is not an error; removing one that is absent is (-ENOENT).
 */
struct xen_hvfilter_set_op {
    uint32_t set_id;          /* IN: index in the installed table's sets */
    uint32_t nr_keys;         /* IN: add/remove: 1 .. MAX_SET_ENTRIES; flush: 0 */
    XEN_GUEST_HANDLE_64(uint64) keys; /* IN: add/remove: nr_keys keys */
};

/*
 * XEN_HVFILTER_OP_bp_add / bp_remove: a breakpoint planted by the monitor at
 * guest-physical address gpa, with the bytes the int3 replaced.  insn[0] is
 * the byte under the int3; insn_len covers one whole instruction; bytes past
 * insn_len must be 0.  bp_remove uses gpa only (the rest must be 0).
 */
struct xen_hvfilter_bp {
    uint64_aligned_t gpa;     /* IN */
    uint8_t insn_len;         /* IN: 1 .. XEN_HVFILTER_MAX_INSN_LEN */
    uint8_t pad[7];           /* IN: must be 0 */
    uint8_t insn[16];         /* IN: original instruction bytes, insn[0] != 0xcc */
};
typedef struct xen_hvfilter_bp xen_hvfilter_bp_t;

/* Counters of one event kind or one rule: 48 bytes. */
struct xen_hvfilter_counts {
    uint64_aligned_t seen;        /* events evaluated */
    uint64_aligned_t forwarded;   /* sent to the monitor ring */
    uint64_aligned_t passed;      /* completed in Xen (action PASS) */
    uint64_aligned_t emulated;    /* breakpoints emulated in Xen */
    uint64_aligned_t sampled_out; /* passed by SAMPLE */
    uint64_aligned_t fallbacks;   /* EMULATE without a registered breakpoint;
                                     also counted under the fallback action */
};
typedef struct xen_hvfilter_counts xen_hvfilter_counts_t;

/*
 * The statistics read by XEN_HVFILTER_OP_stats_get.  For every kind, every
 * rule and `unmatched`: seen == forwarded + passed + emulated + sampled_out.
 * Kind counters cover every event since the domain's hvfilter state was
 * created or last reset; rule counters and `unmatched` cover the events
 * decided by the installed table (generation), so their sum equals the
 * kinds' sum when the statistics were reset as the table was installed.
 * While no table is installed, events are counted (forwarded) per kind only.
 * When Xen's emulator cannot execute a breakpoint's registered bytes, the
 * event is forwarded instead and counted so, with a fallback.
 */
struct xen_hvfilter_stats {
    uint64_aligned_t generation;  /* table generation the rule counts belong to */
    uint32_t nr_rules;            /* rules in the installed table */
    uint32_t pad;
    struct xen_hvfilter_counts kinds[XEN_HVFILTER_EV_NR];
    struct xen_hvfilter_counts unmatched; /* no rule matched: forwarded */
    struct xen_hvfilter_counts rules[XEN_HVFILTER_MAX_RULES];
};
typedef struct xen_hvfilter_stats xen_hvfilter_stats_t;
DEFINE_XEN_GUEST_HANDLE(xen_hvfilter_stats_t);

/* XEN_HVFILTER_OP_stats_get / stats_reset. */
struct xen_hvfilter_stats_op {
    XEN_GUEST_HANDLE_64(xen_hvfilter_stats_t) buf; /* get: OUT; reset: must be null */
};

/*
 * XEN_HVFILTER_OP_get_info: version, limits, capabilities and state.
 * Needs no prior installation and allocates nothing.
 */
struct xen_hvfilter_info {
    uint32_t abi_version;     /* OUT: XEN_HVFILTER_INTERFACE_VERSION */
    uint32_t max_rules;       /* OUT: the limits above */
    uint32_t max_conds;
    uint32_t max_total_conds;
    uint32_t max_sets;
    uint32_t max_set_entries;
    uint32_t max_breakpoints;
    uint32_t kinds;           /* OUT: kinds this CPU/domain can filter */
    uint32_t actions;         /* OUT: bitmap of 1u << XEN_HVFILTER_ACT_* */
    uint32_t nr_rules;        /* OUT: installed rules */
    uint32_t nr_sets;         /* OUT: installed sets */
    uint32_t nr_breakpoints;  /* OUT: registered breakpoints */
    uint64_aligned_t generation; /* OUT: table generation, +1 per replace */
    uint64_aligned_t mem_bytes;  /* OUT: bytes held by hvfilter for all domains */
};

/* Sub-operations. */
#define XEN_HVFILTER_OP_get_info       0
#define XEN_HVFILTER_OP_table_replace  1
#define XEN_HVFILTER_OP_set_add        2
#define XEN_HVFILTER_OP_set_remove     3
#define XEN_HVFILTER_OP_set_flush      4
#define XEN_HVFILTER_OP_bp_add         5
#define XEN_HVFILTER_OP_bp_remove      6
#define XEN_HVFILTER_OP_stats_get      7
#define XEN_HVFILTER_OP_stats_reset    8
#define XEN_HVFILTER_OP_NR              9

/*
 * Errors, per sub-operation (negative errno values):
 *
 *   every op         -ENOSYS           hypervisor without hvfilter (from domctl)
 *                    -EACCES           domctl interface_version mismatch (domctl)
 *                    -ESRCH            no such domain (domctl)
 *                    -EPERM            caller not privileged (XSM) or target is
 *                                      the caller itself or dom0
 *                    -EPROTONOSUPPORT  abi_version's major half differs from
 *                                      the hypervisor's
 *                    -EOPNOTSUPP       not an HVM/PVH domain
 *                    -EINVAL           unknown op, non-zero pad
 *   get_info         (none other)
 *   table_replace    -EINVAL   malformed table: unknown kind, field, operator,
 *                              action or flag; non-zero padding or unused
 *                              condition; field not defined for a kind of the
 *                              rule; operator not allowed for the field; mask
 *                              or values inconsistent; IN_SET on an undeclared
 *                              set; action not allowed for a kind; bad
 *                              fallback; sample 0 with SAMPLE or non-zero
 *                              otherwise; empty or unterminated set name;
 *                              set mask 0; capacity 0; nr_init > capacity;
 *                              nr_keys != sum of nr_init
 *                    -E2BIG    more than MAX_RULES rules, MAX_CONDS conditions
 *                              in a rule, MAX_TOTAL_CONDS in the table,
 *                              MAX_SETS sets or MAX_SET_ENTRIES capacity
 *                    -EOPNOTSUPP a rule names a kind this CPU cannot raise
 *                    -EFAULT   a handle could not be read
 *                    -ENOMEM   no memory for the new table
 *                    -ENOSPC   the initial keys do not fit their set
 *   set_add          -ENOENT   no table or no such set
 *                    -EINVAL   nr_keys 0 or > MAX_SET_ENTRIES
 *                    -ENOSPC   the set would exceed its capacity
 *                    -EFAULT, -ENOMEM
 *   set_remove       -ENOENT   no table, no such set, or a key is absent
 *                    -EINVAL, -EFAULT, -ENOMEM as set_add
 *   set_flush        -ENOENT   no table or no such set
 *                    -EINVAL   nr_keys != 0 or keys not null
 *   bp_add           -EINVAL   insn_len 0 or > 15, insn[0] == 0xcc,
 *                              non-zero pad or bytes past insn_len
 *                    -EEXIST   a breakpoint is registered at gpa
 *                    -ENOSPC   MAX_BREAKPOINTS registered
 *                    -ENOMEM
 *   bp_remove        -ENOENT   no breakpoint at gpa
 *                    -EINVAL   non-zero fields besides gpa
 *   stats_get        -EFAULT   the buffer could not be written
 *   stats_reset      -EINVAL   buf not null
 */

/* The domctl payload: 8 + 64 = 72 bytes, within the domctl union's 128. */
struct xen_domctl_hvfilter_op {
    uint32_t op;              /* IN: XEN_HVFILTER_OP_* */
    uint32_t abi_version;     /* IN: XEN_HVFILTER_INTERFACE_VERSION */
    union {
        struct xen_hvfilter_info info;          /* get_info */
        struct xen_hvfilter_table table;        /* table_replace */
        struct xen_hvfilter_set_op set;         /* set_add/remove/flush */
        struct xen_hvfilter_bp bp;              /* bp_add/remove */
        struct xen_hvfilter_stats_op stats;     /* stats_get/reset */
        uint8_t pad[64];
    } u;
};
typedef struct xen_domctl_hvfilter_op xen_domctl_hvfilter_op_t;
DEFINE_XEN_GUEST_HANDLE(xen_domctl_hvfilter_op_t);

#endif /* __XEN_PUBLIC_HVFILTER_H__ */

/*
 * Local variables:
 * mode: C
 * c-file-style: "BSD"
 * c-basic-offset: 4
 * tab-width: 4
 * indent-tabs-mode: nil
 * End:
 */
