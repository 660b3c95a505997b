/* SPDX-License-Identifier: MIT */
/*
 * hvfilter test guest: a tiny freestanding x86-64 PVH kernel that runs N
 * "processes" (own page tables, KPTI-style root pairs) round robin, calls a
 * kernel function at a fixed address, checks its results and publishes
 * exact counters in the info page.  See README.md.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "info.h"

#define PAGE_SIZE 4096UL
#define PTE_P     0x1UL
#define PTE_RW    0x2UL
#define PTE_US    0x4UL

#define PRIV_MAGIC HVFG_PRIV_MAGIC
#define USER_VEC   0x80

#define HVM_START_MAGIC 0x336ec578U
#define DOMID_SELF      0x7ff0
#define XEN_DOMCTL_IFACE 0x15
#define XEN_DOMCTL_HVFILTER_OP 0x4846
#define HYPERCALL_SCHED_OP 29
#define HYPERCALL_DOMCTL   36
#define SCHEDOP_SHUTDOWN   2
#define SHUTDOWN_POWEROFF  0
#define SHUTDOWN_CRASH     3
#define QEMU_DEBUG_EXIT_PORT 0xf4

/* ---- symbols from boot.S / guest.ld ------------------------------------ */
extern uint64_t kfunc(uint64_t proc, uint64_t x);
extern uint64_t kfunc2(uint64_t proc, uint64_t x);
extern void dbgfunc(uint64_t n);
extern const uint8_t kfunc2_insn[];
extern const uint32_t kfunc2_insn_len;
extern const uint64_t kfunc2_resume;
extern const uint64_t kfunc2_k_addr;
extern const uint8_t kfunc_insn[];
extern const uint32_t kfunc_insn_len;
extern const uint64_t kfunc_resume;
extern const uint64_t exc_table[32];
extern const uint64_t irq_spurious_addr;
extern uint64_t gdt[];
extern uint64_t boot_cr3_writes;
extern uint64_t boot_pdpt_hi[512];
extern uint64_t boot_pml4[512];
extern uint8_t ist_stack_top[];
extern uint8_t kstack0_top[];
extern uint8_t utramp_area[];
extern const uint8_t ufunc_insn[];
extern const uint32_t ufunc_insn_len;
extern const uint32_t ufunc_resume_off;
extern uint64_t enter_user(uint64_t rip, uint64_t rsp, uint64_t a0, uint64_t a1,
                           uint64_t a2, uint64_t a3);
extern const uint8_t user_return[];

#define info ((volatile struct hvfg_info *)HVFG_INFO_VA)

/* ---- per-process page tables ------------------------------------------ */
struct proc_tables {
    uint64_t pdpt[512];
    uint64_t pd[512];
    uint64_t pt[512];
};

struct priv_page {                 /* HVFG_PRIV_OFF_* */
    uint64_t magic;
    uint64_t owner;
    uint64_t work;
    uint64_t state;
    uint64_t ucalls;
    uint64_t bad;
};
_Static_assert(__builtin_offsetof(struct priv_page, ucalls) == HVFG_PRIV_OFF_UCALLS, "ucalls");
_Static_assert(__builtin_offsetof(struct priv_page, bad) == HVFG_PRIV_OFF_BAD, "bad");

/* Root pairs: [p][0] kernel root, [p][1] user root, 8 KiB aligned so that
 * the two CR3 values differ only in bit 12. */
static uint64_t roots[HVFG_NPROC_MAX][2][512]
    __attribute__((section(".bss.pgt_roots"), aligned(8192)));     /* at HVFG_ROOTS_GPA */
static struct proc_tables tables[HVFG_NPROC_MAX]
    __attribute__((section(".bss.pgt_tables"), aligned(4096)));
static uint8_t priv_pages[HVFG_NPROC_MAX][PAGE_SIZE]
    __attribute__((section(".bss.pgt_priv"), aligned(4096)));
static uint8_t hypercall_page[PAGE_SIZE] __attribute__((aligned(4096)));
static uint8_t tramp[2][32] __attribute__((section(".data.tramp"), aligned(32)));
static uint8_t tramp2[2][32] __attribute__((section(".data.tramp"), aligned(32)));

static inline uint64_t pa(const volatile void *va)
{
    return (uint64_t)(uintptr_t)va - HVFG_KBASE;
}

static inline void *va_of(uint64_t paddr)
{
    return (void *)(uintptr_t)(paddr + HVFG_KBASE);
}

/* ---- tiny libc ---------------------------------------------------------- */
void *memset(void *d, int c, size_t n)
{
    uint8_t *p = d;
    while ( n-- )
        *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while ( n-- )
        *p++ = *q++;
    return d;
}

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port));
}

static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" :: "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static inline uint64_t read_cr2(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

static inline uint64_t read_cr3(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void write_cr3(uint64_t v)
{
    __asm__ volatile("mov %0, %%cr3" :: "r"(v) : "memory");
}

#define barrier() __asm__ volatile("" ::: "memory")

/* ---- console (port 0xE9: QEMU debugcon, Xen's "(dN)" guest log) ------- */
static void putc_(char c)
{
    outb(0xe9, (uint8_t)c);
}

static void puts_(const char *s)
{
    while ( *s )
        putc_(*s++);
}

static void put_u(uint64_t v, unsigned base, int width)
{
    char buf[24];
    int i = 0;
    do {
        unsigned d = (unsigned)(v % base);
        buf[i++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while ( v );
    while ( i < width )
        buf[i++] = '0';
    while ( i )
        putc_(buf[--i]);
}

/* %s %c %d %u %x (all integer arguments are 64-bit: use l-less forms with
 * (uint64_t)/(int64_t) arguments), %02x for bytes. */
static void kprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for ( ; *fmt; fmt++ )
    {
        if ( *fmt != '%' )
        {
            putc_(*fmt);
            continue;
        }
        int width = 0;
        fmt++;
        while ( *fmt >= '0' && *fmt <= '9' )
            width = width * 10 + (*fmt++ - '0');
        switch ( *fmt )
        {
        case 's': puts_(va_arg(ap, const char *)); break;
        case 'c': putc_((char)va_arg(ap, int)); break;
        case 'u': put_u(va_arg(ap, uint64_t), 10, width); break;
        case 'x': put_u(va_arg(ap, uint64_t), 16, width); break;
        case 'd': {
            int64_t v = va_arg(ap, int64_t);
            if ( v < 0 ) { putc_('-'); put_u((uint64_t)-v, 10, width); }
            else put_u((uint64_t)v, 10, width);
            break;
        }
        case '%': putc_('%'); break;
        default: putc_('?'); break;
        }
    }
    va_end(ap);
}

/* ---- options ------------------------------------------------------------ */
static struct {
    uint32_t nproc, target, quiet, gap, calls, work, kpti, domctl, selftest;
    uint32_t report, exit, bphalt, inject, user, ucalls, cpuid, msr, calls2, tf;
    uint64_t rounds;
    int gap_given;
} opt = {
    .nproc = 8, .target = 1, .quiet = 1, .calls = 4, .work = 16, .kpti = 1,
    .report = 1000, .ucalls = 4,
};

static char cmdline[512];

static const char *const inject_names[] = { "none", "ud", "gp", "pf", "bp", "kbp", "ubp", "k2bp" };
#define NINJECT 8

static int streq_n(const char *a, const char *b, size_t n)
{
    for ( size_t i = 0; i < n; i++ )
        if ( a[i] != b[i] || !a[i] )
            return 0;
    return b[n] == 0;
}

static int parse_num(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    unsigned base = 10;
    size_t i = 0;
    if ( n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') )
    {
        base = 16;
        i = 2;
    }
    if ( i == n )
        return -1;
    for ( ; i < n; i++ )
    {
        char c = s[i];
        unsigned d;
        if ( c >= '0' && c <= '9' ) d = (unsigned)(c - '0');
        else if ( base == 16 && c >= 'a' && c <= 'f' ) d = (unsigned)(c - 'a' + 10);
        else if ( base == 16 && c >= 'A' && c <= 'F' ) d = (unsigned)(c - 'A' + 10);
        else return -1;
        v = v * base + d;
    }
    *out = v;
    return 0;
}

static void opt_warn(const char *tok, size_t n, const char *why)
{
    puts_("HVFG warning option '");
    for ( size_t i = 0; i < n; i++ )
        putc_(tok[i]);
    kprintf("' %s\n", why);
}

/* Set *dst from a numeric value clamped to [lo, hi]. */
static void set_u32(const char *tok, size_t tn, const char *val, size_t vn,
                    uint32_t *dst, uint64_t lo, uint64_t hi)
{
    uint64_t v;
    if ( parse_num(val, vn, &v) )
    {
        opt_warn(tok, tn, "ignored: not a number");
        return;
    }
    if ( v < lo || v > hi )
    {
        opt_warn(tok, tn, "clamped to its range");
        v = v < lo ? lo : hi;
    }
    *dst = (uint32_t)v;
}

static void parse_cmdline(const char *s)
{
    while ( *s )
    {
        while ( *s == ' ' || *s == '\t' || *s == '\n' )
            s++;
        if ( !*s )
            break;
        const char *tok = s;
        while ( *s && *s != ' ' && *s != '\t' && *s != '\n' )
            s++;
        size_t tn = (size_t)(s - tok), kn = 0;
        while ( kn < tn && tok[kn] != '=' )
            kn++;
        const char *val = kn < tn ? tok + kn + 1 : NULL;
        size_t vn = val ? tn - kn - 1 : 0;

#define KEY(k) streq_n(tok, k, kn)
        if ( !val )
        {
            if ( streq_n(tok, "notarget", tn) ) opt.target = 0;
            else if ( streq_n(tok, "target", tn) ) opt.target = 1;
            else opt_warn(tok, tn, "unknown, ignored");
            continue;
        }
        if ( KEY("nproc") ) set_u32(tok, tn, val, vn, &opt.nproc, 1, HVFG_NPROC_BUSY_MAX);
        else if ( KEY("quiet") ) set_u32(tok, tn, val, vn, &opt.quiet, 1, 1000000);
        else if ( KEY("gap") )
        {
            set_u32(tok, tn, val, vn, &opt.gap, 1, 100000000);
            opt.gap_given = 1;
        }
        else if ( KEY("target") ) set_u32(tok, tn, val, vn, &opt.target, 0, 1);
        else if ( KEY("calls") ) set_u32(tok, tn, val, vn, &opt.calls, 0, 100000);
        else if ( KEY("work") ) set_u32(tok, tn, val, vn, &opt.work, 0, 10000000);
        else if ( KEY("kpti") ) set_u32(tok, tn, val, vn, &opt.kpti, 0, 1);
        else if ( KEY("domctl") ) set_u32(tok, tn, val, vn, &opt.domctl, 0, 1);
        else if ( KEY("report") ) set_u32(tok, tn, val, vn, &opt.report, 0, 0xffffffffU);
        else if ( KEY("exit") ) set_u32(tok, tn, val, vn, &opt.exit, 0, 1);
        else if ( KEY("bphalt") ) set_u32(tok, tn, val, vn, &opt.bphalt, 0, 1);
        else if ( KEY("user") ) set_u32(tok, tn, val, vn, &opt.user, 0, 1);
        else if ( KEY("ucalls") ) set_u32(tok, tn, val, vn, &opt.ucalls, 0, 100000);
        else if ( KEY("cpuid") ) set_u32(tok, tn, val, vn, &opt.cpuid, 0, 100000);
        else if ( KEY("calls2") ) set_u32(tok, tn, val, vn, &opt.calls2, 0, 100000);
        else if ( KEY("tf") ) set_u32(tok, tn, val, vn, &opt.tf, 0, 100000);
        else if ( KEY("msr") ) set_u32(tok, tn, val, vn, &opt.msr, 0, 100000);
        else if ( KEY("rounds") )
        {
            uint64_t v;
            if ( parse_num(val, vn, &v) )
                opt_warn(tok, tn, "ignored: not a number");
            else
                opt.rounds = v;
        }
        else if ( KEY("inject") )
        {
            uint32_t i;
            for ( i = 0; i < NINJECT; i++ )
                if ( streq_n(val, inject_names[i], vn) )
                    break;
            if ( i < NINJECT )
                opt.inject = i;
            else
                opt_warn(tok, tn, "ignored: use none, ud, gp, pf, bp, kbp, ubp or k2bp");
        }
        else if ( KEY("selftest_int3") )
        {
            if ( streq_n(val, "bad", vn) ) opt.selftest = HVFG_SELFTEST_BAD;
            else if ( streq_n(val, "good", vn) || streq_n(val, "1", vn) )
                opt.selftest = HVFG_SELFTEST_GOOD;
            else if ( streq_n(val, "0", vn) ) opt.selftest = HVFG_SELFTEST_OFF;
            else opt_warn(tok, tn, "ignored: use 0, 1, good or bad");
        }
        else
            opt_warn(tok, tn, "unknown, ignored");
#undef KEY
    }
    if ( !opt.gap_given )
        opt.gap = opt.quiet * opt.nproc;
}

/* ---- info page update groups (see info.h, "Consistency") --------------- */
static inline void grp_begin(void)
{
    info->gen_start = info->gen_start + 1;
    barrier();
}

static inline void grp_end(void)
{
    barrier();
    info->gen_done = info->gen_start;
}

/* ---- Xen ------------------------------------------------------------------ */
static uint32_t xen_base;   /* CPUID leaf base, 0 if not on Xen */

static void detect_xen(void)
{
    for ( uint32_t base = 0x40000000; base < 0x40010000; base += 0x100 )
    {
        uint32_t a, b, c, d;
        cpuid(base, &a, &b, &c, &d);
        /* "XenVMMXenVMM" */
        if ( b == 0x566e6558 && c == 0x65584d4d && d == 0x4d4d566e && a >= base + 2 )
        {
            xen_base = base;
            return;
        }
    }
}

static long hypercall2(unsigned op, uint64_t a1, uint64_t a2)
{
    long ret;
    register uint64_t r10 __asm__("r10") = 0;
    register uint64_t r8 __asm__("r8") = 0;
    uint64_t rdx = 0;
    __asm__ volatile("call *%[stub]"
                     : "=a"(ret), "+D"(a1), "+S"(a2), "+d"(rdx), "+r"(r10), "+r"(r8)
                     : [stub] "r"(hypercall_page + op * 32)
                     : "memory", "rcx", "r11");
    return ret;
}

struct xen_domctl_local {          /* struct xen_domctl: 16-byte header + 128-byte union */
    uint32_t cmd;
    uint32_t interface_version;
    uint16_t domain;
    uint16_t pad[3];
    uint8_t  u[128];
} __attribute__((aligned(8)));
_Static_assert(sizeof(struct xen_domctl_local) == 144, "xen_domctl size");

static struct xen_domctl_local domctl_buf;

static long try_domctl(uint16_t domid)
{
    memset(&domctl_buf, 0, sizeof(domctl_buf));
    domctl_buf.cmd = XEN_DOMCTL_HVFILTER_OP;
    domctl_buf.interface_version = XEN_DOMCTL_IFACE;
    domctl_buf.domain = domid;
    return hypercall2(HYPERCALL_DOMCTL, (uint64_t)(uintptr_t)&domctl_buf, 0);
}

static void xen_setup(void)
{
    uint32_t a, b, c, d;
    cpuid(xen_base + 1, &a, &b, &c, &d);
    info->xen_version = a;
    cpuid(xen_base + 2, &a, &b, &c, &d);
    if ( a >= 1 )
    {
        wrmsr(b, pa(hypercall_page));
        info->flags |= HVFG_F_HCALL_PAGE;
    }
    cpuid(xen_base, &a, &b, &c, &d);
    if ( a >= xen_base + 4 )
    {
        cpuid(xen_base + 3, &a, &b, &c, &d);   /* time leaf, subleaf 0 */
        info->tsc_khz = c;
        cpuid(xen_base + 4, &a, &b, &c, &d);
        if ( a & (1U << 4) )   /* XEN_HVM_CPUID_DOMID_PRESENT */
        {
            info->own_domid = c;
            info->flags |= HVFG_F_OWN_DOMID;
        }
    }
}

static void do_domctl_test(void)
{
    if ( !(info->flags & HVFG_F_HCALL_PAGE) )
    {
        kprintf("HVFG domctl skipped reason=%s\n", xen_base ? "no-hypercall-page" : "no-xen");
        return;
    }
    long r0 = try_domctl(0);
    long rs = try_domctl(DOMID_SELF);
    long ro = 0;
    int own = (info->flags & HVFG_F_OWN_DOMID) != 0;
    if ( own )
        ro = try_domctl((uint16_t)info->own_domid);
    info->domctl_ret_dom0 = r0;
    info->domctl_ret_self = rs;
    info->domctl_ret_own = ro;
    info->flags |= HVFG_F_DOMCTL_DONE;
    kprintf("HVFG domctl cmd=0x%x dom0=%d self=%d own=%d own_domid=%d\n",
            (uint64_t)XEN_DOMCTL_HVFILTER_OP, (int64_t)r0, (int64_t)rs, (int64_t)ro,
            own ? (int64_t)info->own_domid : (int64_t)-1);
}

/* ---- halting and exiting ------------------------------------------------ */
/* Stop for good but stay readable: block with interrupts enabled (no
 * interrupt source is enabled, so nothing wakes us).  Under Xen the vCPU is
 * then blocked ('b' in xl list); cli;hlt would make Xen take the vCPU down
 * and power the domain off. */
static void __attribute__((noreturn)) halt_forever(void)
{
    for ( ;; )
        __asm__ volatile("sti; hlt; cli" ::: "memory");
}

/* Stop for good.  With exit=1: under Xen shut the domain down (poweroff when
 * done, crash after a fatal exception, so xl's on_poweroff / on_crash apply);
 * under QEMU write to isa-debug-exit (if configured), so QEMU exits with
 * status 1 when everything was fine and 3 otherwise. */
static void __attribute__((noreturn)) finish(void)
{
    if ( opt.exit )
    {
        if ( xen_base && (info->flags & HVFG_F_HCALL_PAGE) )
        {
            static uint32_t reason;
            reason = info->state == HVFG_STATE_DONE ? SHUTDOWN_POWEROFF : SHUTDOWN_CRASH;
            hypercall2(HYPERCALL_SCHED_OP, SCHEDOP_SHUTDOWN, (uint64_t)(uintptr_t)&reason);
        }
        else if ( !xen_base )
        {
            /* QEMU isa-debug-exit (if configured): exit status (v << 1) | 1. */
            uint32_t bad = info->mismatches || info->umismatches || info->as_mismatches ||
                           info->ev_mismatches || info->mismatches2 ||
                           info->exc_count ||
                           info->state != HVFG_STATE_DONE;
            outl(QEMU_DEBUG_EXIT_PORT, bad);
        }
    }
    halt_forever();
}

/* ---- IDT, TSS, exceptions ----------------------------------------------- */
struct idt_entry {
    uint16_t off_lo, sel;
    uint8_t ist, type;
    uint16_t off_mid;
    uint32_t off_hi, zero;
};
static struct idt_entry idt[256] __attribute__((aligned(16)));
static struct {
    uint32_t rsvd0;
    uint64_t rsp[3];
    uint64_t rsvd1;
    uint64_t ist[7];
    uint64_t rsvd2;
    uint16_t rsvd3, iomap;
} __attribute__((packed, aligned(16))) tss;

struct frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vec, err, rip, cs, rflags, rsp, ss;
};

static void idt_setup(void)
{
    uint64_t base = (uint64_t)(uintptr_t)&tss;
    uint64_t lim = sizeof(tss) - 1;
    tss.ist[0] = (uint64_t)(uintptr_t)ist_stack_top;
    tss.rsp[0] = (uint64_t)(uintptr_t)kstack0_top;
    tss.iomap = sizeof(tss);
    gdt[4] = (lim & 0xffff) | ((base & 0xffffff) << 16) | (0x89UL << 40) |
             (((lim >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    gdt[5] = base >> 32;
    __asm__ volatile("ltr %w0" :: "r"(0x20));

    for ( int v = 0; v < 256; v++ )
    {
        uint64_t h = v < 32 ? exc_table[v] :
                     v == USER_VEC ? (uint64_t)(uintptr_t)user_return : irq_spurious_addr;
        idt[v].off_lo = (uint16_t)h;
        idt[v].sel = 0x08;
        /* #NMI, #DF, #MC on their own stack */
        idt[v].ist = (v == 2 || v == 8 || v == 18) ? 1 : 0;
        /* present, 64-bit interrupt gate; DPL 3 for int $0x80 and, as in
         * Linux, for int3 (#BP) and into (#OF) from ring 3 */
        idt[v].type = (v == USER_VEC || v == 3 || v == 4) ? 0xee : 0x8e;
        idt[v].off_mid = (uint16_t)(h >> 16);
        idt[v].off_hi = (uint32_t)(h >> 32);
        idt[v].zero = 0;
    }
    struct __attribute__((packed)) { uint16_t lim; uint64_t base; } d = {
        sizeof(idt) - 1, (uint64_t)(uintptr_t)idt
    };
    __asm__ volatile("lidt %0" :: "m"(d));
}

static uint32_t cur_proc = HVFG_NO_PROC;

static inline uint64_t utramp_va(int t)
{
    return HVFG_UPAGE_VA + HVFG_UTRAMP_OFF + 32 * (uint64_t)t;
}

static const char *const exc_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#09", "#TS",
    "#NP", "#SS", "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
    "#22", "#23", "#24", "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31",
};

/* The places where an int3 can legitimately appear: the first byte of each
 * function a VMI tool may breakpoint.  tramp[0] runs the original
 * instruction out of line and jumps back after it; tramp[1] is the
 * deliberately wrong variant for selftest_int3=bad. */
struct bp_site {
    const char *name;
    uint64_t va;              /* where the int3 sits (its CPL's address) */
    uint64_t kva;             /* the same byte through the kernel mapping */
    unsigned cpl;
    int enabled;
    uint64_t tramp[2];
};
static struct bp_site bp_sites[3];

static struct bp_site *bp_site_at(const struct frame *f, int *not_advanced)
{
    /* An int3 pushes the address after it; a #BP injected as a hardware
     * exception (a hypervisor bug) would show the int3's own address:
     * recognise both, and say which. */
    for ( unsigned i = 0; i < 3; i++ )
    {
        struct bp_site *s = &bp_sites[i];
        if ( !s->enabled || f->vec != 3 || (f->cs & 3) != s->cpl )
            continue;
        if ( f->rip - 1 == s->va || f->rip == s->va )
        {
            *not_advanced = f->rip == s->va;
            return s;
        }
    }
    return NULL;
}

void exception_handler(struct frame *f);
void exception_handler(struct frame *f)
{
    unsigned cpl = f->cs & 3;
    int not_advanced = 0;
    struct bp_site *site = bp_site_at(f, &not_advanced);
    int bad = opt.selftest == HVFG_SELFTEST_BAD;

    if ( f->vec == 1 && cpl == 0 && f->rip > HVFG_DBG_VA &&
         f->rip <= HVFG_DBG_VA + HVFG_DBG_LEN )
    {
        /* tf=: a single-step trap inside dbgfunc (recognised by its RIP, not
         * by DR6, whose reinjection by a hypervisor is less certain),
         * delivered to us: Xen intercepts every #DB and reinjects it unless
         * a monitor keeps it.  Clear DR6 anyway; iretq restores TF from the
         * frame, so stepping goes on (the last trap has TF already clear). */
        __asm__ volatile("mov %0, %%dr6" :: "r"(0xffff0ff0UL));
        grp_begin();
        info->db_hits = info->db_hits + 1;
        grp_end();
        return;
    }

    if ( site && !not_advanced && opt.selftest != HVFG_SELFTEST_OFF )
    {
        /* Our own breakpoint: run the original instruction out of line. */
        info->bp_selftest_hits = info->bp_selftest_hits + 1;
        f->rip = site->tramp[bad];
        return;
    }

    uint64_t cr2 = read_cr2(), cr3 = read_cr3();
    info->exc_count = info->exc_count + 1;
    info->last_exc_vector = (uint32_t)f->vec;
    info->last_exc_proc = cur_proc;
    info->last_exc_rip = f->rip;
    info->last_exc_error = f->err;
    info->last_exc_cr2 = cr2;
    info->last_exc_cr3 = cr3;
    info->last_exc_cpl = cpl;

    kprintf("HVFG EXCEPTION vector=%u name=%s rip=0x%x cpl=%u err=0x%x cr2=0x%x cr3=0x%x proc=%d count=%u\n",
            f->vec, exc_names[f->vec & 31], f->rip, (uint64_t)cpl, f->err, cr2, cr3,
            cur_proc == HVFG_NO_PROC ? (int64_t)-1 : (int64_t)cur_proc,
            info->exc_count);

    if ( site && !opt.bphalt )
    {
        /* A #BP reinjected at a breakpointable function (a VMI breakpoint
         * that the hypervisor did not handle).  Continuing is safe: if the
         * int3 is still there, execute the original instruction out of line
         * (the guest knows its bytes); if it has been removed, re-execute. */
        int present = *(volatile uint8_t *)site->kva == 0xcc;
        f->rip = present ? site->tramp[0] : site->va;
        kprintf("HVFG EXCEPTION reinjected #BP at %s%s: recovered via %s, continuing\n",
                site->name, not_advanced ? " (RIP not advanced past the int3)" : "",
                present ? "trampoline" : "re-execution");
        return;
    }

    info->halt_reason = site ? HVFG_HALT_BP : HVFG_HALT_EXCEPTION;
    info->state = HVFG_STATE_HALTED;
    /* Close any update group the exception interrupted, so that a reader
     * sees a consistent (if final) page. */
    info->gen_done = info->gen_start;
    kprintf("HVFG HALTED reason=%s%s vector=%u rip=0x%x\n",
            site ? "bp-at-" : "exception", site ? site->name : "", f->vec, f->rip);
    finish();
}

/* ---- kernel function reference and trampolines ------------------------ */
/* What kfunc computes, written independently of its code (no call). */
static uint64_t kfunc_ref(uint64_t p, uint64_t x)
{
    uint64_t r = x + 8 * p + 0x5bd1e995UL;
    r ^= r >> 29;
    r *= 0x27d4eb2dUL;
    r ^= r >> 32;
    return r;
}

static uint64_t ufunc_ref(uint64_t p, uint64_t x)
{
    uint64_t r = x * 0x2545f491UL + p;
    r ^= r >> 31;
    return r;
}

static void build_utrampolines(void)
{
    /* In the user page, written through its supervisor mapping; the jmp is
     * relative, so it is correct at the user address. */
    uint32_t n = ufunc_insn_len;
    for ( int t = 0; t < 2; t++ )
    {
        uint8_t *p = utramp_area + 32 * t;
        memcpy(p, ufunc_insn, n);
        if ( t == 1 )
            p[3] ^= 0x01;   /* selftest_int3=bad: immediate off by one */
        int64_t rel = (int64_t)ufunc_resume_off - (int64_t)(HVFG_UTRAMP_OFF + 32 * t + n + 5);
        p[n] = 0xe9;
        uint32_t r32 = (uint32_t)(int32_t)rel;
        memcpy(p + n + 1, &r32, 4);
    }
}

static uint64_t kfunc2_ref(uint64_t p, uint64_t x)
{
    uint64_t r = (0x9e3779b97f4a7c15UL ^ x) + p;
    r ^= r >> 27;
    r *= 0x165667b1UL;
    return r;
}

/* kfunc2's first instruction is RIP-relative: out of line, its disp32 must
 * be relocated to keep addressing kfunc2_k.  The bad variant copies it
 * unchanged, the classic mistake. */
static void build_trampolines2(void)
{
    uint32_t n = kfunc2_insn_len;
    for ( int t = 0; t < 2; t++ )
    {
        uint8_t *p = tramp2[t];
        memcpy(p, kfunc2_insn, n);
        if ( t == 0 )
        {
            int64_t d = (int64_t)kfunc2_k_addr - (int64_t)(uintptr_t)(p + n);
            uint32_t d32 = (uint32_t)(int32_t)d;
            memcpy(p + 3, &d32, 4);
        }
        int64_t rel = (int64_t)kfunc2_resume - (int64_t)(uintptr_t)(p + n + 5);
        p[n] = 0xe9;
        uint32_t r32 = (uint32_t)(int32_t)rel;
        memcpy(p + n + 1, &r32, 4);
    }
}

static void build_trampolines(void)
{
    build_utrampolines();
    build_trampolines2();
    uint32_t n = kfunc_insn_len;
    for ( int t = 0; t < 2; t++ )
    {
        uint8_t *p = tramp[t];
        memcpy(p, kfunc_insn, n);
        if ( t == 1 )
            p[4] ^= 0x01;   /* selftest_int3=bad: displacement off by one */
        /* jmp rel32 back to the instruction after the original one */
        int64_t rel = (int64_t)kfunc_resume - (int64_t)(uintptr_t)(p + n + 5);
        p[n] = 0xe9;
        uint32_t r32 = (uint32_t)(int32_t)rel;
        memcpy(p + n + 1, &r32, 4);
    }

    bp_sites[0] = (struct bp_site){ "kfunc", HVFG_KFUNC_VA, HVFG_KFUNC_VA, 0, 1,
                                    { (uint64_t)(uintptr_t)tramp[0], (uint64_t)(uintptr_t)tramp[1] } };
    bp_sites[1] = (struct bp_site){ "kfunc2", HVFG_KFUNC2_VA, HVFG_KFUNC2_VA, 0, opt.calls2 != 0,
                                    { (uint64_t)(uintptr_t)tramp2[0], (uint64_t)(uintptr_t)tramp2[1] } };
    bp_sites[2] = (struct bp_site){ "ufunc", HVFG_UFUNC_VA, HVFG_KBASE + HVFG_UFUNC_GPA, 3, (int)opt.user,
                                    { utramp_va(0), utramp_va(1) } };
}

/* ---- processes ---------------------------------------------------------- */
static uint32_t nprocs;       /* opt.nproc + 1 (index 0 = target slot) */
static uint64_t kroot[HVFG_NPROC_MAX], uroot[HVFG_NPROC_MAX];

static void build_processes(void)
{
    unsigned pd_i = (HVFG_PRIV_VA >> 21) & 511, pt_i = (HVFG_PRIV_VA >> 12) & 511;
    for ( uint32_t p = 0; p < nprocs; p++ )
    {
        struct proc_tables *t = &tables[p];
        memset(t, 0, sizeof(*t));
        memset(priv_pages[p], 0, PAGE_SIZE);
        t->pt[pt_i] = pa(priv_pages[p]) | PTE_P | PTE_RW | PTE_US;
        /* the shared user page: read-only, user (mapped even with user=0) */
        t->pt[(HVFG_UPAGE_VA >> 12) & 511] = HVFG_UPAGE_GPA | PTE_P | PTE_US;
        t->pd[pd_i] = pa(t->pt) | PTE_P | PTE_RW | PTE_US;
        t->pdpt[0] = pa(t->pd) | PTE_P | PTE_RW | PTE_US;
        for ( int r = 0; r < 2; r++ )
        {
            memset(roots[p][r], 0, PAGE_SIZE);
            roots[p][r][0] = pa(t->pdpt) | PTE_P | PTE_RW | PTE_US;
            roots[p][r][511] = pa(boot_pdpt_hi) | PTE_P | PTE_RW;
        }
        struct priv_page *pp = (struct priv_page *)priv_pages[p];
        pp->magic = PRIV_MAGIC;
        pp->owner = p;
        pp->state = 0x9e3779b97f4a7c15UL * (p + 1);
        kroot[p] = pa(roots[p][0]);         /* = HVFG_KROOT(p) */
        uroot[p] = pa(roots[p][1]);
        info->proc[p].kroot = kroot[p];
        info->proc[p].uroot = uroot[p];
    }
}

/* ---- the schedule ------------------------------------------------------- */
static uint32_t prev_proc = HVFG_NO_PROC;
static uint32_t cpuid0[4];        /* CPUID leaf 0 at boot: the reference */
static uint64_t msr_seq;

#define MSR_LSTAR 0xc0000082U

/* The value of the n-th LSTAR write: canonical, distinct per process and
 * write (the guest never executes syscall, so LSTAR is free to use). */
static inline uint64_t msr_value(uint32_t p, uint64_t n)
{
    return HVFG_KBASE + 0x10000000UL + ((uint64_t)p << 20) + ((n & 0xffff) << 4);
}
static uint64_t seen_ucalls[HVFG_NPROC_MAX], seen_bad[HVFG_NPROC_MAX];
static uint64_t round_sum, round_ref;

/* One mov to CR3 with its counters.  It is counted (and announced in
 * cr3_pending) in a group *before* it executes, outside any group, and the
 * announcement is withdrawn after it: so at the write's own CR3 event (the
 * vCPU waits on the mov) the page is consistent and already counts it, and a
 * pause that lands just after the mov (where TCG takes it) finds exact
 * counters too.  See info.h, "Consistency". */
static inline void cr3_switch(uint32_t p, uint64_t val, int is_slice_start)
{
    volatile struct hvfg_proc *pi = &info->proc[p];
    grp_begin();
    info->cr3_writes = info->cr3_writes + 1;
    pi->cr3_writes = pi->cr3_writes + 1;
    if ( is_slice_start )
    {
        info->slices = info->slices + 1;
        pi->slices = pi->slices + 1;
        if ( p != prev_proc )
            info->switches = info->switches + 1;
        info->current_proc = p;
    }
    info->cr3_pending = val;
    info->cr3_pending_proc = p;
    grp_end();
    write_cr3(val);
    grp_begin();
    info->cr3_pending = 0;
    info->cr3_pending_proc = HVFG_NO_PROC;
    grp_end();
}

static void run_slice(uint32_t p)
{
    volatile struct hvfg_proc *pi = &info->proc[p];
    volatile struct priv_page *pp = (volatile struct priv_page *)HVFG_PRIV_VA;
    uint32_t W = opt.work, C = opt.calls;

    /* Context switch to the process's kernel root. */
    cr3_switch(p, kroot[p], 1);
    cur_proc = p;
    prev_proc = p;

    /* "Return to user": user root for the work (KPTI). */
    if ( opt.kpti )
        cr3_switch(p, uroot[p], 0);

    /* Work: private page must be ours (address-space check). */
    uint64_t bad = 0, uacc = 0, uref = 0, U = opt.ucalls;
    uint64_t ubase = (pi->slices << 24) ^ ((uint64_t)p << 40);
    if ( opt.user )
    {
        /* ring 3: the work, then U calls of ufunc; back via int $0x80 */
        uacc = enter_user(HVFG_UPAGE_VA + HVFG_UMAIN_OFF, HVFG_USTACK_TOP, p, W, U, ubase);
        for ( uint64_t i = 0; i < U; i++ )
            uref = ((uref << 7) | (uref >> 57)) ^ ufunc_ref(p, ubase + i);
        bad = pp->bad - seen_bad[p];
        seen_bad[p] = pp->bad;
    }
    else
    {
        uint64_t st = pp->state;
        for ( uint32_t w = 0; w < W; w++ )
        {
            if ( pp->magic != PRIV_MAGIC || pp->owner != p )
                bad++;
            st = st * 6364136223846793005UL + 1442695040888963407UL;
            pp->state = st;
            pp->work = pp->work + 1;
        }
    }
    grp_begin();
    pi->work = pi->work + W;
    info->work = info->work + W;
    info->as_checks = info->as_checks + W;
    if ( pp->work != pi->work )
        bad++;
    if ( bad )
        info->as_mismatches = info->as_mismatches + bad;
    if ( opt.user )
    {
        info->ucalls = info->ucalls + (pp->ucalls - seen_ucalls[p]);
        seen_ucalls[p] = pp->ucalls;
        if ( uacc != uref )
            info->umismatches = info->umismatches + 1;
    }
    grp_end();

    /* "System call": back to the kernel root, call the kernel function. */
    if ( opt.kpti )
        cr3_switch(p, kroot[p], 0);

    uint64_t base = (pi->slices << 20) ^ ((uint64_t)p << 48);
    uint64_t acc = 0, ref = 0;
    for ( uint32_t i = 0; i < C; i++ )
    {
        uint64_t x = base + i;
        uint64_t r = kfunc(p, x);           /* counts itself, see boot.S */
        acc = ((acc << 7) | (acc >> 57)) ^ r;
        ref = ((ref << 7) | (ref >> 57)) ^ kfunc_ref(p, x);
    }

    /* The second kernel function (RIP-relative first instruction). */
    uint64_t acc2 = 0, ref2 = 0, base2 = (pi->slices << 22) ^ ((uint64_t)p << 44);
    for ( uint32_t i = 0; i < opt.calls2; i++ )
    {
        uint64_t x = base2 + i;
        uint64_t r = kfunc2(p, x);          /* counts itself */
        acc2 = ((acc2 << 7) | (acc2 >> 57)) ^ r;
        ref2 = ((ref2 << 7) | (ref2 >> 57)) ^ kfunc2_ref(p, x);
    }

    /* Single-step traps: counted (2N + 3) before dbgfunc runs, like a CR3
     * write; the #DB handler counts those that reach the guest. */
    if ( opt.tf )
    {
        grp_begin();
        info->tf_steps = info->tf_steps + 2UL * opt.tf + 3;
        grp_end();
        dbgfunc(opt.tf);
    }

    /* Other monitorable events: CPUID (leaf 0, checked against the boot
     * result) and MSR writes (LSTAR, read back: a write the hypervisor lets
     * pass must commit). */
    uint64_t ev_bad = 0;
    for ( uint32_t i = 0; i < opt.cpuid; i++ )
    {
        uint32_t a, b, c, d;
        cpuid(0, &a, &b, &c, &d);
        if ( a != cpuid0[0] || b != cpuid0[1] || c != cpuid0[2] || d != cpuid0[3] )
            ev_bad++;
    }
    for ( uint32_t i = 0; i < opt.msr; i++ )
    {
        uint64_t v = msr_value(p, msr_seq++);
        wrmsr(MSR_LSTAR, v);
        if ( rdmsr(MSR_LSTAR) != v )
            ev_bad++;
    }

    grp_begin();
    info->cpuids = info->cpuids + opt.cpuid;
    info->msr_writes = info->msr_writes + opt.msr;
    if ( ev_bad )
        info->ev_mismatches = info->ev_mismatches + ev_bad;
    info->checks = info->checks + 1;
    if ( acc != ref )
        info->mismatches = info->mismatches + 1;
    if ( acc2 != ref2 )
        info->mismatches2 = info->mismatches2 + 1;
    if ( opt.target && p == 0 && (acc != ref || acc2 != ref2 || uacc != uref || ev_bad) )
        info->target_mismatches = info->target_mismatches + 1;
    grp_end();
    round_sum = round_sum * 31 + acc;
    round_ref = round_ref * 31 + ref;
}

static void report(void)
{
    kprintf("HVFG progress round=%u slices=%u switches=%u cr3=%u calls=%u work=%u "
            "checks=%u mismatch=%u as_mismatch=%u exc=%u\n",
            info->rounds, info->slices, info->switches, info->cr3_writes, info->calls,
            info->work, info->checks, info->mismatches, info->as_mismatches,
            info->exc_count);
    if ( opt.user )
        kprintf("HVFG user ucalls=%u umismatch=%u\n", info->ucalls, info->umismatches);
    if ( opt.calls2 )
        kprintf("HVFG kfunc2 calls2=%u mismatch2=%u\n", info->calls2, info->mismatches2);
    if ( opt.tf )
        kprintf("HVFG debug tf_steps=%u db_hits=%u\n", info->tf_steps, info->db_hits);
    if ( opt.cpuid || opt.msr )
        kprintf("HVFG events cpuid=%u msr=%u ev_mismatch=%u\n", info->cpuids, info->msr_writes,
                info->ev_mismatches);
    if ( opt.target )
    {
        volatile struct hvfg_proc *t = &info->proc[0];
        kprintf("HVFG target proc=0 slices=%u cr3=%u calls=%u work=%u mismatch=%u share_ppm=%u\n",
                t->slices, t->cr3_writes, t->calls, t->work, info->target_mismatches,
                info->slices ? t->slices * 1000000 / info->slices : 0);
    }
    uint64_t smin = ~0UL, smax = 0, wmin = ~0UL, wmax = 0;
    for ( uint32_t p = 1; p < nprocs; p++ )
    {
        uint64_t s = info->proc[p].slices, w = info->proc[p].work;
        smin = s < smin ? s : smin;
        smax = s > smax ? s : smax;
        wmin = w < wmin ? w : wmin;
        wmax = w > wmax ? w : wmax;
    }
    kprintf("HVFG busy procs=%u slices_min=%u slices_max=%u work_min=%u work_max=%u\n",
            (uint64_t)opt.nproc, smin, smax, wmin, wmax);
}

/* inject=: provoke a fault on purpose, to test the exception path. */
static void inject_fault(void)
{
    kprintf("HVFG inject %s proc=%u\n", inject_names[opt.inject], (uint64_t)cur_proc);
    switch ( opt.inject )
    {
    case HVFG_INJECT_UD:
        __asm__ volatile("ud2");
        break;
    case HVFG_INJECT_GP:
        (void)*(volatile uint64_t *)0x8000000000000000UL;
        break;
    case HVFG_INJECT_PF:
        (void)*(volatile uint64_t *)0x200000UL;
        break;
    case HVFG_INJECT_BP:
        __asm__ volatile("int3");
        break;
    case HVFG_INJECT_KBP:
        *(volatile uint8_t *)HVFG_KFUNC_VA = 0xcc;
        break;
    case HVFG_INJECT_UBP:
        *(volatile uint8_t *)(HVFG_KBASE + HVFG_UFUNC_GPA) = 0xcc;
        break;
    case HVFG_INJECT_K2BP:
        *(volatile uint8_t *)HVFG_KFUNC2_VA = 0xcc;
        break;
    }
}

static void __attribute__((noreturn)) schedule(void)
{
    uint32_t N = opt.nproc, M = opt.gap, next_busy = 0;
    uint64_t since_target = M;   /* the target runs first */
    uint64_t busy_in_round = 0;

    grp_begin();
    info->tsc_first = rdtsc();
    grp_end();

    for ( ;; )
    {
        if ( opt.target && since_target >= M )
        {
            run_slice(0);
            since_target = 0;
            continue;
        }
        run_slice(1 + next_busy);
        next_busy = next_busy + 1 == N ? 0 : next_busy + 1;
        since_target++;
        if ( ++busy_in_round < N )
            continue;

        /* A round: every busy process once (plus the target slices due). */
        busy_in_round = 0;
        grp_begin();
        info->round_checksum = round_sum;
        info->round_checksum_ref = round_ref;
        info->rounds = info->rounds + 1;
        info->tsc_round = rdtsc();
        grp_end();
        round_sum = round_ref = 0;
        uint64_t r = info->rounds;
        if ( opt.report && r % opt.report == 0 )
            report();
        if ( r == 1 && opt.inject )
            inject_fault();
        if ( opt.rounds && r >= opt.rounds )
        {
            grp_begin();
            info->state = HVFG_STATE_DONE;
            info->halt_reason = HVFG_HALT_DONE;
            info->tsc_done = info->tsc_round;   /* the end of the last round */
            grp_end();
            if ( !opt.report || r % opt.report )
                report();
            uint64_t cyc = info->tsc_done - info->tsc_first;
            kprintf("HVFG done rounds=%u slices=%u cr3=%u calls=%u mismatch=%u as_mismatch=%u exc=%u tsc_cycles=%u",
                    r, info->slices, info->cr3_writes, info->calls, info->mismatches,
                    info->as_mismatches, info->exc_count, cyc);
            if ( info->tsc_khz )
                kprintf(" ms=%u", cyc / info->tsc_khz);
            kprintf("\n");
            finish();
        }
    }
}

/* ---- boot --------------------------------------------------------------- */
/* RAM check from the start info's memory map (version >= 1): is
 * [start, end) inside one RAM entry?  1 yes, 0 no, -1 unknown (no map). */
static int ram_covers(uint64_t si_pa, uint64_t start, uint64_t end)
{
    const volatile uint32_t *si = va_of(si_pa);
    if ( si[1] < 1 )
        return -1;
    uint64_t map = *(const volatile uint64_t *)va_of(si_pa + 40);
    uint32_t n = si[12];
    if ( !map || map >= 0x40000000UL || !n || n > 128 )
        return -1;
    for ( uint32_t i = 0; i < n; i++ )
    {
        const volatile uint64_t *e = va_of(map + 24UL * i);   /* addr, size, type */
        if ( (uint32_t)e[2] == 1 && e[0] <= start && end <= e[0] + e[1] )
            return 1;
    }
    return 0;
}

static uint64_t start_info;        /* its guest-physical address, if valid */

static void read_start_info(uint64_t si_pa)
{
    cmdline[0] = 0;
    if ( !si_pa || si_pa >= 0x40000000UL )
    {
        kprintf("HVFG warning no usable start info (0x%x): defaults\n", si_pa);
        return;
    }
    const volatile uint32_t *si = va_of(si_pa);
    if ( si[0] != HVM_START_MAGIC )
    {
        kprintf("HVFG warning bad start info magic 0x%x: defaults\n", (uint64_t)si[0]);
        return;
    }
    start_info = si_pa;
    uint64_t cl = *(const volatile uint64_t *)va_of(si_pa + 24);
    if ( !cl || cl >= 0x40000000UL )
        return;
    const volatile char *c = va_of(cl);
    size_t i = 0;
    while ( i < sizeof(cmdline) - 1 && c[i] )
    {
        cmdline[i] = c[i];
        i++;
    }
    cmdline[i] = 0;
    if ( c[i] )
        kprintf("HVFG warning command line longer than %u characters, truncated\n",
                (uint64_t)(sizeof(cmdline) - 1));
}

void kmain(uint64_t start_info_pa);
void kmain(uint64_t start_info_pa)
{
    idt_setup();
    /* Under QEMU the firmware left the legacy PICs programmed: mask them
     * (under Xen PVH there are none and the writes are ignored). */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    read_start_info(start_info_pa);
    detect_xen();
    /* The image and the info page must be RAM (memory = 32 is plenty). */
    if ( start_info && ram_covers(start_info, HVFG_INFO_GPA, HVFG_INFO_GPA + HVFG_INFO_SIZE) == 0 )
    {
        kprintf("HVFG FATAL the info page at 0x%x is not RAM: give the guest at least %u MiB\n",
                HVFG_INFO_GPA, (uint64_t)((HVFG_INFO_GPA + HVFG_INFO_SIZE) >> 20) + 1);
        halt_forever();
    }

    memset((void *)HVFG_INFO_VA, 0, HVFG_INFO_SIZE);
    parse_cmdline(cmdline);
    nprocs = opt.nproc + 1;

    info->magic = HVFG_INFO_MAGIC;
    info->version = HVFG_INFO_VERSION;
    info->size = HVFG_INFO_SIZE;
    info->state = HVFG_STATE_BOOT;
    info->opt_nproc = opt.nproc;
    info->opt_target = opt.target;
    info->opt_quiet = opt.quiet;
    info->opt_gap = opt.gap;
    info->opt_calls = opt.calls;
    info->opt_work = opt.work;
    info->opt_kpti = opt.kpti;
    info->opt_domctl = opt.domctl;
    info->opt_selftest_int3 = opt.selftest;
    info->opt_report = opt.report;
    info->opt_rounds = opt.rounds;
    info->opt_exit = opt.exit;
    info->opt_bphalt = opt.bphalt;
    info->opt_inject = opt.inject;
    info->opt_user = opt.user;
    info->opt_ucalls = opt.user ? opt.ucalls : 0;
    info->opt_cpuid = opt.cpuid;
    info->opt_calls2 = opt.calls2;
    info->opt_tf = opt.tf;
    info->dbg_va = HVFG_DBG_VA;
    info->dbg_gpa = HVFG_DBG_GPA;
    info->kfunc2_va = HVFG_KFUNC2_VA;
    info->kfunc2_gpa = HVFG_KFUNC2_GPA;
    for ( uint32_t i = 0; i < kfunc2_insn_len; i++ )
        info->kfunc2_insn[i] = kfunc2_insn[i];
    info->kfunc2_insn_len = kfunc2_insn_len;
    info->opt_msr = opt.msr;
    if ( opt.user )
    {
        info->ufunc_va = HVFG_UFUNC_VA;
        info->ufunc_gpa = HVFG_UFUNC_GPA;
        for ( uint32_t i = 0; i < ufunc_insn_len; i++ )
            info->ufunc_insn[i] = ufunc_insn[i];
        info->ufunc_insn_len = ufunc_insn_len;
    }
    cpuid(0, &cpuid0[0], &cpuid0[1], &cpuid0[2], &cpuid0[3]);
    info->nprocs = nprocs;
    info->target_index = opt.target ? 0 : HVFG_NO_PROC;
    info->kfunc_va = HVFG_KFUNC_VA;
    info->kfunc_gpa = HVFG_KFUNC_GPA;
    for ( uint32_t i = 0; i < kfunc_insn_len; i++ )
        info->kfunc_insn[i] = kfunc_insn[i];
    info->kfunc_insn_len = kfunc_insn_len;
    info->current_proc = HVFG_NO_PROC;
    info->last_exc_proc = HVFG_NO_PROC;
    info->cr3_pending_proc = HVFG_NO_PROC;
    info->own_domid = HVFG_NO_PROC;
    info->cr3_writes_boot = boot_cr3_writes;
    info->cr3_writes = boot_cr3_writes;
    if ( xen_base )
        info->flags |= HVFG_F_XEN;

    int kok = 1;
    for ( uint32_t i = 0; i < kfunc_insn_len; i++ )
        if ( ((const volatile uint8_t *)HVFG_KFUNC_VA)[i] != kfunc_insn[i] )
            kok = 0;
    if ( kok )
        info->flags |= HVFG_F_KFUNC_OK;

    if ( xen_base )
        xen_setup();

    kprintf("HVFG boot hvfilter test guest info_gpa=0x%x info_va=0x%x version=%u boot_cr3=0x%x xen=%u",
            HVFG_INFO_GPA, HVFG_INFO_VA, (uint64_t)HVFG_INFO_VERSION, pa(boot_pml4),
            (uint64_t)(xen_base != 0));
    if ( xen_base )
        kprintf(" xen_version=%u.%u tsc_khz=%u", (uint64_t)(info->xen_version >> 16),
                (uint64_t)(info->xen_version & 0xffff), (uint64_t)info->tsc_khz);
    kprintf("\nHVFG cmdline \"%s\"\n", cmdline);
    kprintf("HVFG options nproc=%u target=%u quiet=%u gap=%u calls=%u work=%u kpti=%u "
            "domctl=%u selftest_int3=%u rounds=%u report=%u exit=%u bphalt=%u user=%u ucalls=%u "
            "cpuid=%u msr=%u calls2=%u tf=%u\n",
            (uint64_t)opt.nproc, (uint64_t)opt.target, (uint64_t)opt.quiet, (uint64_t)opt.gap,
            (uint64_t)opt.calls, (uint64_t)opt.work, (uint64_t)opt.kpti, (uint64_t)opt.domctl,
            (uint64_t)opt.selftest, opt.rounds, (uint64_t)opt.report, (uint64_t)opt.exit,
            (uint64_t)opt.bphalt, (uint64_t)opt.user, (uint64_t)(opt.user ? opt.ucalls : 0),
            (uint64_t)opt.cpuid, (uint64_t)opt.msr, (uint64_t)opt.calls2, (uint64_t)opt.tf);
    kprintf("HVFG kfunc va=0x%x gpa=0x%x len=%u insn=", HVFG_KFUNC_VA, HVFG_KFUNC_GPA,
            (uint64_t)kfunc_insn_len);
    for ( uint32_t i = 0; i < kfunc_insn_len; i++ )
        kprintf("%02x", (uint64_t)kfunc_insn[i]);
    kprintf(" intact=%u\n", (uint64_t)kok);
    if ( opt.calls2 )
    {
        kprintf("HVFG kfunc2 va=0x%x gpa=0x%x len=%u insn=", HVFG_KFUNC2_VA, HVFG_KFUNC2_GPA,
                (uint64_t)kfunc2_insn_len);
        for ( uint32_t i = 0; i < kfunc2_insn_len; i++ )
            kprintf("%02x", (uint64_t)kfunc2_insn[i]);
        kprintf("\n");
    }
    if ( opt.user )
    {
        kprintf("HVFG ufunc va=0x%x gpa=0x%x len=%u insn=", HVFG_UFUNC_VA, HVFG_UFUNC_GPA,
                (uint64_t)ufunc_insn_len);
        for ( uint32_t i = 0; i < ufunc_insn_len; i++ )
            kprintf("%02x", (uint64_t)ufunc_insn[i]);
        kprintf("\n");
    }

    build_processes();
    for ( uint32_t p = 0; p < nprocs; p++ )
        kprintf("HVFG proc %u kroot=0x%x uroot=0x%x%s\n", (uint64_t)p, kroot[p], uroot[p],
                p == 0 ? (opt.target ? " target" : " unused") : " busy");

    if ( opt.domctl )
        do_domctl_test();

    build_trampolines();
    if ( opt.selftest != HVFG_SELFTEST_OFF )
    {
        *(volatile uint8_t *)HVFG_KFUNC_VA = 0xcc;
        kprintf("HVFG selftest_int3 planted int3 at 0x%x mode=%s\n", HVFG_KFUNC_VA,
                opt.selftest == HVFG_SELFTEST_BAD ? "bad" : "good");
        if ( opt.calls2 )
        {
            *(volatile uint8_t *)HVFG_KFUNC2_VA = 0xcc;
            kprintf("HVFG selftest_int3 planted int3 at 0x%x (kfunc2)\n", HVFG_KFUNC2_VA);
        }
        if ( opt.user )
        {
            *(volatile uint8_t *)(HVFG_KBASE + HVFG_UFUNC_GPA) = 0xcc;
            kprintf("HVFG selftest_int3 planted int3 at 0x%x (ufunc)\n", HVFG_UFUNC_VA);
        }
    }

    grp_begin();
    info->state = HVFG_STATE_RUNNING;
    grp_end();
    kprintf("HVFG running\n");
    schedule();
}
