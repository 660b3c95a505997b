/* SPDX-License-Identifier: MIT */
/*
 * hvfilter test guest: layout of the info page.
 *
 * The guest publishes its options and counters in one 4 KiB page at the
 * fixed guest-physical address HVFG_INFO_GPA (mapped in the guest at
 * HVFG_INFO_VA).  Everything is little-endian, fixed-width and naturally
 * aligned, padding is explicit; lab/guest/guestinfo.py parses the same
 * layout and tests/guest/test_layout.py compares the two.
 *
 * Consistency: every update group (the counters of a CR3 write, of a call
 * of the kernel function, the end of a slice...) first increments gen_start
 * (the last 8 bytes of the page), then writes the data, then copies
 * gen_start into gen_done (at the start of the page).  A snapshot is
 * consistent iff gen_done == gen_start: true whenever the vCPU is paused
 * outside a group, and also for a copy taken while the guest runs, provided
 * the copy reads the page from low to high addresses.  If they differ, take
 * another snapshot (unpause briefly first when the domain is paused).
 *
 * The instructions a monitor traps on are outside every group, so a reader
 * called from a monitor event (vCPU paused at that instruction) always sees
 * a consistent page:
 *   - mov to CR3: one group counts the write (cr3_writes, slices...) and
 *     announces it in cr3_pending / cr3_pending_proc, then the mov
 *     executes, then a group clears cr3_pending.  So cr3_writes includes the
 *     write in flight: at its own CR3 event the page already counts it, and
 *     so it does at a pause just after the mov (where TCG takes pauses).
 *     While cr3_pending != 0 that write may not have executed yet.
 *   - kfunc: its first instruction runs before its group, so at a breakpoint
 *     on it `calls` does not include the call being made.
 *
 * Bump HVFG_INFO_VERSION whenever a field moves or changes meaning; new
 * fields go into reserved[] (zero until then) without a bump.
 */
#ifndef HVFG_INFO_H
#define HVFG_INFO_H

#define HVFG_INFO_GPA       0x01000000UL           /* 16 MiB */
#define HVFG_KBASE          0xffffffff80000000UL   /* VA of guest-physical 0 */
#define HVFG_INFO_VA        (HVFG_KBASE + HVFG_INFO_GPA)
#define HVFG_INFO_SIZE      4096
#define HVFG_INFO_MAGIC     0x4f464e4947465648UL   /* "HVFGINFO" */
#define HVFG_INFO_VERSION   3

#define HVFG_NPROC_BUSY_MAX 64                     /* nproc= limit */
#define HVFG_NPROC_MAX      (HVFG_NPROC_BUSY_MAX + 1)  /* + the target, index 0 */
#define HVFG_NO_PROC        0xffffffffU

/* Kernel function: fixed virtual and guest-physical address. */
#define HVFG_KFUNC_GPA      0x00101000UL
#define HVFG_KFUNC_VA       (HVFG_KBASE + HVFG_KFUNC_GPA)
/* Second kernel function (calls2=), in the same page: its first instruction
 * is RIP-relative. */
#define HVFG_KFUNC2_OFF     0x800
#define HVFG_KFUNC2_GPA     (HVFG_KFUNC_GPA + HVFG_KFUNC2_OFF)
#define HVFG_KFUNC2_VA      (HVFG_KBASE + HVFG_KFUNC2_GPA)
#define HVFG_KFUNC2_K_OFF   0xf00                  /* its 8-byte constant, page offset */
/* Single-step site (tf=): a short loop run with RFLAGS.TF set, in the same
 * page; every #DB trap it raises has its RIP inside [DBG_VA, DBG_END_VA). */
#define HVFG_DBG_OFF        0xc00
#define HVFG_DBG_GPA        (HVFG_KFUNC_GPA + HVFG_DBG_OFF)
#define HVFG_DBG_VA         (HVFG_KBASE + HVFG_DBG_GPA)
#define HVFG_DBG_LEN        0x40

/* Page tables at fixed guest-physical addresses (guest.ld): the boot PML4
 * (the first CR3 value) and the root pairs, kernel root of process p at
 * HVFG_KROOT(p), its user root at HVFG_KROOT(p) | 0x1000. */
#define HVFG_BOOT_CR3       0x001fc000UL
#define HVFG_ROOTS_GPA      0x00200000UL
#define HVFG_KROOT(p)       (HVFG_ROOTS_GPA + 0x2000UL * (p))

/* Process-private data page (one per process, same VA in every process). */
#define HVFG_PRIV_VA        0x0000000000400000UL
/* Its layout (u64 each; written by the work, read by the kernel). */
#define HVFG_PRIV_MAGIC     0x5652505047465648UL   /* "HVFGPPRV" */
#define HVFG_PRIV_OFF_MAGIC  0
#define HVFG_PRIV_OFF_OWNER  8
#define HVFG_PRIV_OFF_WORK   16
#define HVFG_PRIV_OFF_STATE  24
#define HVFG_PRIV_OFF_UCALLS 32                    /* counted by ufunc */
#define HVFG_PRIV_OFF_BAD    40                    /* address-space check failures (user mode) */
#define HVFG_USTACK_TOP     (HVFG_PRIV_VA + 4096 - 64)   /* user stack: top of the private page */

/* User page (user=1): one physical page mapped read-only + user at
 * HVFG_UPAGE_VA in every process (like a shared library), and supervisor at
 * HVFG_KBASE + HVFG_UPAGE_GPA.  The user function ufunc is at its start. */
#define HVFG_UPAGE_GPA      0x00102000UL
#define HVFG_UPAGE_VA       0x0000000000401000UL
#define HVFG_UFUNC_GPA      HVFG_UPAGE_GPA
#define HVFG_UFUNC_VA       HVFG_UPAGE_VA
#define HVFG_UMAIN_OFF      0x100                   /* user_main */
#define HVFG_UTRAMP_OFF     0x200                   /* two 32-byte trampolines */

/* state */
#define HVFG_STATE_BOOT     0
#define HVFG_STATE_RUNNING  1
#define HVFG_STATE_DONE     2   /* rounds= reached; stopped on purpose */
#define HVFG_STATE_HALTED   3   /* halted after a fatal exception */

/* halt_reason */
#define HVFG_HALT_NONE      0
#define HVFG_HALT_DONE      1   /* rounds= reached */
#define HVFG_HALT_EXCEPTION 2   /* an exception that cannot be recovered */
#define HVFG_HALT_BP        3   /* #BP at kfunc (or ufunc) and bphalt=1 */

/* flags */
#define HVFG_F_XEN          (1U << 0)  /* Xen found via CPUID 0x400000xx */
#define HVFG_F_HCALL_PAGE   (1U << 1)  /* hypercall page installed */
#define HVFG_F_DOMCTL_DONE  (1U << 2)  /* domctl_ret_* are valid */
#define HVFG_F_KFUNC_OK     (1U << 3)  /* kfunc bytes matched kfunc_insn at boot */
#define HVFG_F_OWN_DOMID    (1U << 4)  /* own_domid is valid (CPUID leaf base+4) */

/* opt_selftest_int3 */
#define HVFG_SELFTEST_OFF   0
#define HVFG_SELFTEST_GOOD  1
#define HVFG_SELFTEST_BAD   2

/* opt_inject: a fault the guest provokes itself after round 1 (tests) */
#define HVFG_INJECT_NONE    0
#define HVFG_INJECT_UD      1   /* ud2 */
#define HVFG_INJECT_GP      2   /* load from a non-canonical address */
#define HVFG_INJECT_PF      3   /* load from an unmapped address */
#define HVFG_INJECT_BP      4   /* int3 in ordinary code (not kfunc) */
#define HVFG_INJECT_KBP     5   /* int3 left at kfunc, as if a VMI #BP were reinjected */
#define HVFG_INJECT_UBP     6   /* the same at ufunc (user=1) */
#define HVFG_INJECT_K2BP    7   /* the same at kfunc2 (calls2=) */

/* Offsets (used by the assembly and checked against the struct below). */
#define HVFG_OFF_GEN_DONE   16
#define HVFG_OFF_CALLS      240
#define HVFG_OFF_SPURIOUS   416
#define HVFG_OFF_CALLS2     560
#define HVFG_OFF_PROC       968
#define HVFG_PROC_SIZE      48
#define HVFG_PROC_OFF_CALLS 24
#define HVFG_OFF_GEN_START  4088

#ifndef __ASSEMBLER__
#include <stdint.h>

struct hvfg_proc {                 /* 48 bytes */
    uint64_t kroot;                /* CR3 value of the kernel root = HVFG_KROOT(p) */
    uint64_t uroot;                /* CR3 value of the user root = kroot | 0x1000 */
    uint64_t slices;               /* time slices run */
    uint64_t calls;                /* kernel-function calls (counted by the function) */
    uint64_t work;                 /* work units done */
    uint64_t cr3_writes;           /* mov-to-CR3 with this process's kroot or uroot */
};

struct hvfg_info {
    uint64_t magic;                /*   0 HVFG_INFO_MAGIC */
    uint32_t version;              /*   8 HVFG_INFO_VERSION */
    uint32_t size;                 /*  12 sizeof(struct hvfg_info) = 4096 */
    uint64_t gen_done;             /*  16 see "Consistency" above */
    uint32_t state;                /*  24 HVFG_STATE_* */
    uint32_t halt_reason;          /*  28 HVFG_HALT_* */
    uint32_t flags;                /*  32 HVFG_F_* */
    uint32_t xen_version;          /*  36 CPUID base+1 EAX: major << 16 | minor; 0 without Xen */

    /* Boot options in effect (after defaults and clamping). */
    uint32_t opt_nproc;            /*  40 busy processes */
    uint32_t opt_target;           /*  44 1: process 0 is the target */
    uint32_t opt_quiet;            /*  48 quiet=K */
    uint32_t opt_gap;              /*  52 M: busy slices between two target slices */
    uint32_t opt_calls;            /*  56 kernel-function calls per slice */
    uint32_t opt_work;             /*  60 work units per slice */
    uint32_t opt_kpti;             /*  64 */
    uint32_t opt_domctl;           /*  68 */
    uint32_t opt_selftest_int3;    /*  72 HVFG_SELFTEST_* */
    uint32_t opt_report;           /*  76 rounds between progress lines (0: none) */
    uint64_t opt_rounds;           /*  80 stop after this many rounds (0: never) */
    uint32_t opt_exit;             /*  88 1: leave QEMU / shut the domain down when stopping */
    uint32_t opt_bphalt;           /*  92 1: halt on a reinjected #BP instead of recovering */
    uint32_t opt_inject;           /*  96 HVFG_INJECT_* (fault injected after round 1) */
    uint32_t opt_user;             /* 100 1: work and ufunc calls run in ring 3 */
    uint32_t opt_ucalls;           /* 104 user-function calls per slice (0 with user=0) */
    uint32_t opt_cpuid;            /* 108 CPUID instructions per slice */
    uint32_t opt_msr;              /* 112 MSR writes per slice */
    uint32_t pad0;                 /* 116 zero */

    uint32_t nprocs;               /* 120 entries of proc[] in use = opt_nproc + 1 */
    uint32_t target_index;         /* 124 0, or HVFG_NO_PROC with target=0 */
    uint64_t kfunc_va;             /* 128 HVFG_KFUNC_VA */
    uint64_t kfunc_gpa;            /* 136 HVFG_KFUNC_GPA */
    uint8_t  kfunc_insn[16];       /* 144 original bytes of its first instruction */
    uint32_t kfunc_insn_len;       /* 160 their number */
    uint32_t current_proc;         /* 164 process of the running slice (HVFG_NO_PROC before) */
    uint64_t ufunc_va;             /* 168 HVFG_UFUNC_VA (0 with user=0) */
    uint64_t ufunc_gpa;            /* 176 HVFG_UFUNC_GPA (0 with user=0) */
    uint8_t  ufunc_insn[16];       /* 184 original bytes of its first instruction */
    uint32_t ufunc_insn_len;       /* 200 their number */
    uint32_t pad1;                 /* 204 zero */

    /* Totals. */
    uint64_t cr3_writes;           /* 208 every mov-to-CR3, including the boot one */
    uint64_t cr3_writes_boot;      /* 216 of which before the first slice (1) */
    uint64_t slices;               /* 224 */
    uint64_t switches;             /* 232 slices whose process differs from the previous one */
    uint64_t calls;                /* 240 kernel-function calls (counted by the function) */
    uint64_t work;                 /* 248 */
    uint64_t rounds;               /* 256 completed rounds (the heartbeat) */
    uint64_t ucalls;               /* 264 user-function calls (counted by the function) */
    uint64_t cpuids;               /* 272 CPUID instructions executed by the slices */
    uint64_t msr_writes;           /* 280 MSR writes (wrmsr) by the slices */

    /* Self-check. */
    uint64_t checks;               /* 288 slices whose call results were checked */
    uint64_t mismatches;           /* 296 of which the kernel function's were wrong */
    uint64_t umismatches;          /* 304 of which the user function's were wrong */
    uint64_t target_mismatches;    /* 312 slices of the target with any mismatch (any check) */
    uint64_t as_checks;            /* 320 work units that verified their private page */
    uint64_t as_mismatches;        /* 328 of which saw another address space */
    uint64_t ev_mismatches;        /* 336 wrong CPUID results or MSR read-backs */
    uint64_t round_checksum;       /* 344 fold of all kfunc results of the last round */
    uint64_t round_checksum_ref;   /* 352 the same, computed without the kernel function */

    /* Exceptions. */
    uint64_t exc_count;            /* 360 every exception except selftest #BPs */
    uint32_t last_exc_vector;      /* 368 */
    uint32_t last_exc_proc;        /* 372 current process at the time (HVFG_NO_PROC: none) */
    uint64_t last_exc_rip;         /* 376 RIP pushed by the CPU (after int3 for #BP) */
    uint64_t last_exc_error;       /* 384 error code (0 if none) */
    uint64_t last_exc_cr2;         /* 392 */
    uint64_t last_exc_cr3;         /* 400 */
    uint64_t bp_selftest_hits;     /* 408 #BPs handled by the selftest_int3 handler */
    uint64_t spurious_irqs;        /* 416 interrupts (vectors 32-255) taken; expected 0 */
    uint32_t last_exc_cpl;         /* 424 CPL of the interrupted code */
    uint32_t pad2;                 /* 428 zero */

    /* Privilege test (domctl=1). */
    int64_t  domctl_ret_dom0;      /* 432 HYPERVISOR_domctl return, target domain 0 */
    int64_t  domctl_ret_self;      /* 440 target DOMID_SELF (0x7ff0) */
    int64_t  domctl_ret_own;       /* 448 target own_domid (if known) */
    uint32_t own_domid;            /* 456 from CPUID base+4 ECX, HVFG_NO_PROC if unknown */
    uint32_t pad3;                 /* 460 zero */

    /* Guest-side time: TSC values (rdtsc) and the TSC rate if known. */
    uint32_t tsc_khz;              /* 464 from Xen's CPUID leaf base+3 (ECX); 0 if unknown */
    uint32_t pad4;                 /* 468 zero */
    uint64_t tsc_first;            /* 472 just before the first slice */
    uint64_t tsc_round;            /* 480 at the end of the last completed round */
    uint64_t tsc_done;             /* 488 = tsc_round of the last round once rounds= is reached */

    /* The CR3 write in flight (see "Consistency"). */
    uint64_t cr3_pending;          /* 496 counted but maybe not executed yet; 0 if none */
    uint32_t cr3_pending_proc;     /* 504 its process, HVFG_NO_PROC if none */
    uint32_t pad5;                 /* 508 zero */

    /* The second kernel function (calls2=). */
    uint32_t opt_calls2;           /* 512 kfunc2 calls per slice */
    uint32_t pad6;                 /* 516 zero */
    uint64_t kfunc2_va;            /* 520 HVFG_KFUNC2_VA */
    uint64_t kfunc2_gpa;           /* 528 HVFG_KFUNC2_GPA */
    uint8_t  kfunc2_insn[16];      /* 536 original bytes of its first instruction */
    uint32_t kfunc2_insn_len;      /* 552 their number */
    uint32_t pad7;                 /* 556 zero */
    uint64_t calls2;               /* 560 kfunc2 calls (counted by the function) */
    uint64_t mismatches2;          /* 568 slices whose kfunc2 results were wrong */

    /* Single-step debug exceptions (tf=). */
    uint32_t opt_tf;               /* 576 loop iterations stepped per slice (N) */
    uint32_t pad8;                 /* 580 zero */
    uint64_t dbg_va;               /* 584 HVFG_DBG_VA: the stepped code */
    uint64_t dbg_gpa;              /* 592 HVFG_DBG_GPA */
    uint64_t tf_steps;             /* 600 single-step traps due: 2N + 3 per slice, counted before */
    uint64_t db_hits;              /* 608 of which delivered to the guest as #DB */

    uint64_t reserved[44];         /* 616 zero (room for new fields) */

    struct hvfg_proc proc[HVFG_NPROC_MAX]; /* 968 index 0 = target slot */

    uint64_t gen_start;            /* 4088 see "Consistency" above; always the last field */
};

_Static_assert(sizeof(struct hvfg_proc) == HVFG_PROC_SIZE, "proc size");
_Static_assert(sizeof(struct hvfg_info) == HVFG_INFO_SIZE, "info size");
_Static_assert(__builtin_offsetof(struct hvfg_info, gen_done) == HVFG_OFF_GEN_DONE, "gen_done");
_Static_assert(__builtin_offsetof(struct hvfg_info, calls) == HVFG_OFF_CALLS, "calls");
_Static_assert(__builtin_offsetof(struct hvfg_info, spurious_irqs) == HVFG_OFF_SPURIOUS, "spurious");
_Static_assert(__builtin_offsetof(struct hvfg_info, calls2) == HVFG_OFF_CALLS2, "calls2");
_Static_assert(__builtin_offsetof(struct hvfg_info, proc) == HVFG_OFF_PROC, "proc");
_Static_assert(__builtin_offsetof(struct hvfg_proc, calls) == HVFG_PROC_OFF_CALLS, "pcalls");
_Static_assert(__builtin_offsetof(struct hvfg_info, gen_start) == HVFG_OFF_GEN_START, "gen_start");
#endif /* __ASSEMBLER__ */

#endif /* HVFG_INFO_H */
