/* SPDX-License-Identifier: GPL-2.0 */
/*
 * xen/common/hvfilter.c
 *
 * hvfilter: per-domain filters for VM introspection events, evaluated where
 * each monitor event is raised, before a vm_event ring slot is claimed.
 *
 * This file holds the XEN_DOMCTL_hvfilter_op handler, the per-domain state
 * and hvfilter_event(), which the monitor hooks call.  Checking tables and
 * deciding events is the evaluator's job (hvfilter_eval.c, shared with the
 * userspace tests and the Python simulator).
 *
 * Concurrency.  The control path runs under the domctl lock (the handler,
 * the monitor ring's disable and domain_kill() are all domctls), so control
 * operations never race each other.  The event path reads the state of its
 * own domain and writes the counters of its own vCPU only: no lock, no
 * atomic, no allocation.  Anything the event path reads (the state pointer,
 * the table, the breakpoints, the sets) is only changed while the domain is
 * paused; a new table is built outside, then swapped in while paused.
 * The one reader outside the event path, hvfilter_bp_insn() (a monitor's
 * response, handled on a dom0 CPU), takes bp_lock, which breakpoint
 * updates hold too.
 */

#include <xen/domain.h>
#include <xen/errno.h>
#include <xen/guest_access.h>
#include <xen/hvfilter.h>
#include <xen/lib.h>
#include <xen/random.h>
#include <xen/sched.h>
#include <xen/spinlock.h>
#include <xen/vmap.h>
#include <xen/xmalloc.h>
#include <asm/hvm/hvm.h>
#include <asm/mem_access.h>
#include <public/domctl.h>
#include <public/vm_event.h>

#include "hvfilter_eval.h"

#define EV_BIT(k) (1u << XEN_HVFILTER_EV_ ## k)

/* One vCPU's counters, on a cache line of their own. */
struct hvfilter_vcpu {
    struct hvf_counters c;
} __cacheline_aligned;

struct hvfilter_domain {
    struct hvf_table *table;        /* NULL: no rules, every event forwarded */
    size_t table_bytes;
    struct hvf_bptab *bptab;        /* NULL until the first bp_add */
    spinlock_t bp_lock;             /* bptab's contents vs hvfilter_bp_insn() */
    uint64_t generation;            /* +1 per table_replace */
    unsigned int nr_vcpus;
    struct hvfilter_vcpu *vcpu;     /* nr_vcpus entries, by vcpu_id */
};

/* Bytes held by hvfilter for all domains (get_info.mem_bytes). */
static DEFINE_SPINLOCK(mem_lock);
static uint64_t mem_bytes;

/*
 * All of hvfilter's memory comes from here.  Small objects come from the
 * xmalloc pool, large ones (tables, the breakpoint table) from vmalloc, so
 * that they need no contiguous pages.  The size must be given back on free.
 */
static void *hvf_alloc(size_t size)
{
    void *p = size <= PAGE_SIZE ? xzalloc_bytes(size) : vzalloc(size);

    if ( p )
    {
        spin_lock(&mem_lock);
        mem_bytes += size;
        spin_unlock(&mem_lock);
    }

    return p;
}

static void hvf_free(void *p, size_t size)
{
    if ( !p )
        return;

    if ( size <= PAGE_SIZE )
        xfree(p);
    else
        vfree(p);

    spin_lock(&mem_lock);
    mem_bytes -= size;
    spin_unlock(&mem_lock);
}

static uint64_t hvf_seed(void)
{
    return ((uint64_t)get_random() << 32) | get_random();
}

/* The kinds this CPU can raise for d. */
static uint32_t hvf_kinds(const struct domain *d)
{
    uint32_t kinds = EV_BIT(CR0_WRITE) | EV_BIT(CR3_WRITE) |
                     EV_BIT(CR4_WRITE) | EV_BIT(XCR0_WRITE) |
                     EV_BIT(MSR_WRITE) | EV_BIT(BREAKPOINT) |
                     EV_BIT(DEBUG_EXCEPTION) | EV_BIT(CPUID) |
                     EV_BIT(GUEST_REQUEST);

    /* Single-step needs the monitor trap flag (Intel). */
    if ( hvm_is_singlestep_supported() )
        kinds |= EV_BIT(SINGLESTEP);

    if ( hvm_has_set_descriptor_access_exiting() )
        kinds |= EV_BIT(DESC_ACCESS);

    /* mem_access needs EPT (Intel) and HAP. */
    if ( p2m_mem_access_sanity_check(d) )
        kinds |= EV_BIT(MEM_ACCESS);

    return kinds;
}

static bool tail_is_zero(const struct xen_domctl_hvfilter_op *op,
                         size_t used)
{
    size_t i;

    for ( i = used; i < sizeof(op->u.pad); i++ )
        if ( op->u.pad[i] )
            return false;

    return true;
}

/* The domain's state, allocated on first use.  NULL when out of memory. */
static struct hvfilter_domain *get_state(struct domain *d)
{
    struct hvfilter_domain *st = d->hvfilter;

    if ( st )
        return st;

    st = hvf_alloc(sizeof(*st));
    if ( !st )
        return NULL;

    spin_lock_init(&st->bp_lock);
    st->nr_vcpus = d->max_vcpus;
    st->vcpu = hvf_alloc(sizeof(*st->vcpu) * st->nr_vcpus);
    if ( !st->vcpu )
    {
        hvf_free(st, sizeof(*st));
        return NULL;
    }

    /* The event path tests the pointer: publish it complete. */
    domain_pause(d);
    d->hvfilter = st;
    domain_unpause(d);

    return st;
}

void hvfilter_domain_destroy(struct domain *d)
{
    struct hvfilter_domain *st = d->hvfilter;

    if ( !st )
        return;

    ASSERT(d->is_dying || atomic_read(&d->pause_count));

    d->hvfilter = NULL;

    hvf_free(st->table, st->table_bytes);
    hvf_free(st->bptab, sizeof(*st->bptab));
    hvf_free(st->vcpu, sizeof(*st->vcpu) * st->nr_vcpus);
    hvf_free(st, sizeof(*st));
}

static void get_info(const struct domain *d, struct xen_hvfilter_info *info)
{
    const struct hvfilter_domain *st = d->hvfilter;

    memset(info, 0, sizeof(*info));

    info->abi_version = XEN_HVFILTER_INTERFACE_VERSION;
    info->max_rules = XEN_HVFILTER_MAX_RULES;
    info->max_conds = XEN_HVFILTER_MAX_CONDS;
    info->max_total_conds = XEN_HVFILTER_MAX_TOTAL_CONDS;
    info->max_sets = XEN_HVFILTER_MAX_SETS;
    info->max_set_entries = XEN_HVFILTER_MAX_SET_ENTRIES;
    info->max_breakpoints = XEN_HVFILTER_MAX_BREAKPOINTS;
    info->kinds = hvf_kinds(d);
    info->actions = (1u << XEN_HVFILTER_ACT_NR) - 1;

    if ( st )
    {
        if ( st->table )
        {
            info->nr_rules = st->table->nr_rules;
            info->nr_sets = st->table->nr_sets;
        }
        if ( st->bptab )
            info->nr_breakpoints = hvf_bp_count(st->bptab);
        info->generation = st->generation;
    }

    spin_lock(&mem_lock);
    info->mem_bytes = mem_bytes;
    spin_unlock(&mem_lock);
}

static int table_replace(struct domain *d,
                         const struct xen_hvfilter_table *tab)
{
    struct hvfilter_domain *st;
    struct xen_hvfilter_rule *rules = NULL;
    struct xen_hvfilter_set *sets = NULL;
    uint64_t *keys = NULL;
    struct hvf_table *table = NULL, *old;
    size_t rules_bytes = sizeof(*rules) * tab->nr_rules;
    size_t sets_bytes = sizeof(*sets) * tab->nr_sets;
    size_t keys_bytes = sizeof(*keys) * tab->nr_keys;
    size_t table_bytes = 0, old_bytes;
    int bad_rule, bad_cond, rc;

    if ( tab->pad )
        return -EINVAL;
    if ( tab->nr_rules > XEN_HVFILTER_MAX_RULES ||
         tab->nr_sets > XEN_HVFILTER_MAX_SETS )
        return -E2BIG;

    rc = -ENOMEM;
    if ( tab->nr_rules && !(rules = hvf_alloc(rules_bytes)) )
        goto out;
    if ( tab->nr_sets && !(sets = hvf_alloc(sets_bytes)) )
        goto out;

    rc = -EFAULT;
    if ( copy_from_guest(rules, tab->rules, tab->nr_rules) ||
         copy_from_guest(sets, tab->sets, tab->nr_sets) )
        goto out;

    /* This also bounds nr_keys: it must equal the sum of the sets' nr_init. */
    rc = hvf_table_check(rules, tab->nr_rules, sets, tab->nr_sets,
                         tab->nr_keys, hvf_kinds(d), &bad_rule, &bad_cond);
    if ( rc )
    {
        printk(XENLOG_G_DEBUG
               "%pd: hvfilter: table refused (%d), rule %d, condition %d\n",
               d, rc, bad_rule, bad_cond);
        goto out;
    }

    rc = -ENOMEM;
    if ( tab->nr_keys && !(keys = hvf_alloc(keys_bytes)) )
        goto out;
    rc = -EFAULT;
    if ( copy_from_guest(keys, tab->keys, tab->nr_keys) )
        goto out;

    rc = -ENOMEM;
    if ( !(st = get_state(d)) )
        goto out;

    /* An empty table removes the rules; otherwise build the new one aside. */
    if ( tab->nr_rules || tab->nr_sets )
    {
        table_bytes = hvf_table_size(sets, tab->nr_sets);
        if ( !(table = hvf_alloc(table_bytes)) )
            goto out;

        rc = hvf_table_init(table, table_bytes, rules, tab->nr_rules,
                            sets, tab->nr_sets, keys, tab->nr_keys,
                            hvf_seed(), st->generation + 1);
        if ( rc )
        {
            hvf_free(table, table_bytes);
            goto out;
        }
    }

    domain_pause(d);
    old = st->table;
    old_bytes = st->table_bytes;
    st->table = table;
    st->table_bytes = table_bytes;
    st->generation++;
    domain_unpause(d);

    hvf_free(old, old_bytes);
    rc = 0;

 out:
    hvf_free(keys, keys_bytes);
    hvf_free(sets, sets_bytes);
    hvf_free(rules, rules_bytes);

    return rc;
}

static int set_op(struct domain *d, unsigned int op,
                  const struct xen_hvfilter_set_op *sop)
{
    struct hvfilter_domain *st = d->hvfilter;
    uint64_t *keys;
    size_t keys_bytes = sizeof(*keys) * sop->nr_keys;
    int rc;

    if ( op == XEN_HVFILTER_OP_set_flush )
    {
        if ( sop->nr_keys || !guest_handle_is_null(sop->keys) )
            return -EINVAL;
        if ( !st || !st->table )
            return -ENOENT;

        domain_pause(d);
        rc = hvf_set_flush(st->table, sop->set_id);
        domain_unpause(d);

        return rc;
    }

    if ( !sop->nr_keys || sop->nr_keys > XEN_HVFILTER_MAX_SET_ENTRIES )
        return -EINVAL;
    if ( !st || !st->table || sop->set_id >= st->table->nr_sets )
        return -ENOENT;

    if ( !(keys = hvf_alloc(keys_bytes)) )
        return -ENOMEM;

    rc = -EFAULT;
    if ( !copy_from_guest(keys, sop->keys, sop->nr_keys) )
    {
        domain_pause(d);
        if ( op == XEN_HVFILTER_OP_set_add )
            rc = hvf_set_add(st->table, sop->set_id, keys, sop->nr_keys);
        else
            rc = hvf_set_remove(st->table, sop->set_id, keys, sop->nr_keys);
        domain_unpause(d);
    }

    hvf_free(keys, keys_bytes);

    return rc;
}

static int bp_op(struct domain *d, unsigned int op,
                 const struct xen_hvfilter_bp *bp)
{
    struct hvfilter_domain *st = d->hvfilter;
    struct hvf_bptab *bptab;
    int rc;

    if ( op == XEN_HVFILTER_OP_bp_remove )
    {
        if ( (rc = hvf_bp_check(bp, true)) )
            return rc;
        if ( !st || !st->bptab )
            return -ENOENT;

        domain_pause(d);
        spin_lock(&st->bp_lock);
        rc = hvf_bp_remove(st->bptab, bp->gpa);
        spin_unlock(&st->bp_lock);
        domain_unpause(d);

        return rc;
    }

    if ( (rc = hvf_bp_check(bp, false)) )
        return rc;
    if ( !(st = get_state(d)) )
        return -ENOMEM;

    /* The breakpoint table is allocated with the first breakpoint. */
    if ( !(bptab = st->bptab) )
    {
        if ( !(bptab = hvf_alloc(sizeof(*bptab))) )
            return -ENOMEM;
        hvf_bptab_init(bptab, hvf_seed());
    }

    domain_pause(d);
    spin_lock(&st->bp_lock);
    st->bptab = bptab;
    rc = hvf_bp_add(bptab, bp);
    spin_unlock(&st->bp_lock);
    domain_unpause(d);

    return rc;
}

static int stats_get(struct domain *d, const struct xen_hvfilter_stats_op *sop)
{
    const struct hvfilter_domain *st = d->hvfilter;
    struct xen_hvfilter_stats *stats;
    unsigned int i;
    int rc = 0;

    if ( !(stats = hvf_alloc(sizeof(*stats))) )
        return -ENOMEM;

    if ( st )
    {
        stats->generation = st->generation;
        stats->nr_rules = st->table ? st->table->nr_rules : 0;

        /* A paused domain gives a snapshot in which every count adds up. */
        domain_pause(d);
        for ( i = 0; i < st->nr_vcpus; i++ )
            hvf_stats_add(stats, &st->vcpu[i].c);
        domain_unpause(d);
    }

    if ( copy_to_guest(sop->buf, stats, 1) )
        rc = -EFAULT;

    hvf_free(stats, sizeof(*stats));

    return rc;
}

static void stats_reset(struct domain *d)
{
    struct hvfilter_domain *st = d->hvfilter;
    unsigned int i;

    if ( !st )
        return;

    domain_pause(d);
    for ( i = 0; i < st->nr_vcpus; i++ )
        hvf_counters_reset(&st->vcpu[i].c);
    domain_unpause(d);
}

int hvfilter_domctl(struct domain *d, struct xen_domctl_hvfilter_op *op)
{
    /* The ABI is pinned: a size change must bump the interface version. */
    BUILD_BUG_ON(sizeof(struct xen_hvfilter_cond) != 32);
    BUILD_BUG_ON(sizeof(struct xen_hvfilter_rule) != 272);
    BUILD_BUG_ON(sizeof(struct xen_hvfilter_set) != 40);
    BUILD_BUG_ON(sizeof(struct xen_hvfilter_table) != 40);
    BUILD_BUG_ON(sizeof(struct xen_hvfilter_set_op) != 16);
    BUILD_BUG_ON(sizeof(struct xen_hvfilter_bp) != 32);
    BUILD_BUG_ON(sizeof(struct xen_hvfilter_counts) != 48);
    BUILD_BUG_ON(sizeof(struct xen_hvfilter_stats) !=
                 16 + 48 * (XEN_HVFILTER_EV_NR + 1 + XEN_HVFILTER_MAX_RULES));
    BUILD_BUG_ON(sizeof(struct xen_hvfilter_stats_op) != 8);
    BUILD_BUG_ON(sizeof(struct xen_hvfilter_info) != 64);
    BUILD_BUG_ON(sizeof(struct xen_domctl_hvfilter_op) != 72);
    BUILD_BUG_ON(sizeof(struct xen_domctl_hvfilter_op) >
                 sizeof(((struct xen_domctl *)NULL)->u));
    BUILD_BUG_ON(offsetof(struct xen_domctl_hvfilter_op, u) != 8);

    /* The hooks pass vm_event's CR index as the event kind. */
    BUILD_BUG_ON(VM_EVENT_X86_CR0 != XEN_HVFILTER_EV_CR0_WRITE);
    BUILD_BUG_ON(VM_EVENT_X86_CR3 != XEN_HVFILTER_EV_CR3_WRITE);
    BUILD_BUG_ON(VM_EVENT_X86_CR4 != XEN_HVFILTER_EV_CR4_WRITE);
    BUILD_BUG_ON(VM_EVENT_X86_XCR0 != XEN_HVFILTER_EV_XCR0_WRITE);

    /* As monitor_domctl(): we cannot pause ourselves; dom0 is off limits. */
    if ( d == current->domain || is_hardware_domain(d) )
        return -EPERM;

    if ( d->is_dying )
        return -ESRCH;

    /* Minor versions only add values: the major half must match. */
    if ( XEN_HVFILTER_VERSION_MAJOR(op->abi_version) !=
         XEN_HVFILTER_VERSION_MAJOR(XEN_HVFILTER_INTERFACE_VERSION) )
    {
        /* Still tell the caller which version we speak. */
        if ( op->op == XEN_HVFILTER_OP_get_info )
            get_info(d, &op->u.info);
        return -EPROTONOSUPPORT;
    }

    if ( !is_hvm_domain(d) )
        return -EOPNOTSUPP;

    switch ( op->op )
    {
    case XEN_HVFILTER_OP_get_info:
        get_info(d, &op->u.info);
        return 0;

    case XEN_HVFILTER_OP_table_replace:
        if ( !tail_is_zero(op, sizeof(op->u.table)) )
            return -EINVAL;
        return table_replace(d, &op->u.table);

    case XEN_HVFILTER_OP_set_add:
    case XEN_HVFILTER_OP_set_remove:
    case XEN_HVFILTER_OP_set_flush:
        if ( !tail_is_zero(op, sizeof(op->u.set)) )
            return -EINVAL;
        return set_op(d, op->op, &op->u.set);

    case XEN_HVFILTER_OP_bp_add:
    case XEN_HVFILTER_OP_bp_remove:
        if ( !tail_is_zero(op, sizeof(op->u.bp)) )
            return -EINVAL;
        return bp_op(d, op->op, &op->u.bp);

    case XEN_HVFILTER_OP_stats_get:
        if ( !tail_is_zero(op, sizeof(op->u.stats)) )
            return -EINVAL;
        return stats_get(d, &op->u.stats);

    case XEN_HVFILTER_OP_stats_reset:
        if ( !tail_is_zero(op, sizeof(op->u.stats)) ||
             !guest_handle_is_null(op->u.stats.buf) )
            return -EINVAL;
        stats_reset(d);
        return 0;
    }

    return -EINVAL;
}

unsigned int hvfilter_event(struct vcpu *v, const struct hvfilter_ev *hev,
                            struct hvfilter_insn *insn)
{
    const struct hvfilter_domain *st = v->domain->hvfilter;
    struct hvf_event ev;
    struct hvf_verdict vd;

    ASSERT(v == current);

    if ( !st )
        return XEN_HVFILTER_ACT_FORWARD;

    ASSERT(v->vcpu_id < st->nr_vcpus);

    ev.kind = hev->kind;
    ev.f[XEN_HVFILTER_FIELD_VCPU] = v->vcpu_id;
    ev.f[XEN_HVFILTER_FIELD_CR3] = v->arch.hvm.guest_cr[3];
    ev.f[XEN_HVFILTER_FIELD_RIP] = guest_cpu_user_regs()->rip;
    ev.f[XEN_HVFILTER_FIELD_CPL] = hvm_get_cpl(v);
    ev.f[XEN_HVFILTER_FIELD_NEW_VALUE] = hev->new_value;
    ev.f[XEN_HVFILTER_FIELD_OLD_VALUE] = hev->old_value;
    ev.f[XEN_HVFILTER_FIELD_INDEX] = hev->index;
    ev.f[XEN_HVFILTER_FIELD_SUBINDEX] = hev->subindex;
    ev.f[XEN_HVFILTER_FIELD_GFN] = hev->gfn;
    ev.f[XEN_HVFILTER_FIELD_GLA] = hev->gla;

    hvf_eval(st->table, st->bptab, &st->vcpu[v->vcpu_id].c, &ev, &vd);

    if ( vd.action == XEN_HVFILTER_ACT_EMULATE )
    {
        /* Only breakpoints can be emulated, and their hook passes insn. */
        if ( !insn )
        {
            ASSERT_UNREACHABLE();
            return XEN_HVFILTER_ACT_FORWARD;
        }

        BUILD_BUG_ON(sizeof(insn->bytes) != sizeof(vd.insn));
        insn->len = vd.insn_len;
        memcpy(insn->bytes, vd.insn, sizeof(insn->bytes));
        insn->rule = vd.rule;
    }

    return vd.action;
}

void hvfilter_emulate_failed(struct vcpu *v, const struct hvfilter_ev *hev,
                             const struct hvfilter_insn *insn)
{
    const struct hvfilter_domain *st = v->domain->hvfilter;
    const struct hvf_event ev = { .kind = hev->kind };
    struct hvf_verdict vd = {
        .action = XEN_HVFILTER_ACT_EMULATE,
        .rule = insn->rule,
    };

    ASSERT(v == current);

    if ( st )
        hvf_eval_emulate_failed(&st->vcpu[v->vcpu_id].c, &ev, &vd);
}

bool hvfilter_bp_insn(struct domain *d, uint64_t gpa,
                      uint8_t bytes[XEN_HVFILTER_MAX_INSN_LEN + 1])
{
    struct hvfilter_domain *st = d->hvfilter;
    const struct hvf_bp *bp;
    bool found = false;

    if ( !st )
        return false;

    spin_lock(&st->bp_lock);
    if ( st->bptab && (bp = hvf_bp_find(st->bptab, gpa)) != NULL )
    {
        BUILD_BUG_ON(sizeof(bp->insn) != XEN_HVFILTER_MAX_INSN_LEN + 1);
        memcpy(bytes, bp->insn, sizeof(bp->insn));
        found = true;
    }
    spin_unlock(&st->bp_lock);

    return found;
}

/*
 * Local variables:
 * mode: C
 * c-file-style: "BSD"
 * c-basic-offset: 4
 * indent-tabs-mode: nil
 * End:
 */
