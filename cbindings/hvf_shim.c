/* SPDX-License-Identifier: MIT */
/*
 * hvf_shim.c: hvfilter operations over libxencall (xen) or an in-process
 * model of the hypervisor (sim).  See hvf_shim.h.
 *
 * Both backends share everything up to the domctl: the same payload buffers,
 * guest handles and struct xen_domctl_hvfilter_op.  The xen backend then
 * wraps it in a struct xen_domctl and issues hypercall 36; the sim backend
 * hands it to sim_domctl(), which plays the hypervisor's part.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <xencall.h>
#include <xentoollog.h>

#include "xen.h"
#include "domctl.h"

#include "hvf_shim.h"

/* Our payload travels in the domctl union; it must fit (header: 72 <= 128). */
_Static_assert(sizeof(struct xen_domctl_hvfilter_op) <=
               sizeof(((struct xen_domctl *)0)->u),
               "xen_domctl_hvfilter_op does not fit the domctl union");
_Static_assert(sizeof(struct xen_domctl_hvfilter_op) == 72,
               "xen_domctl_hvfilter_op is not the size hvfilter.h states");

/* ------------------------------------------------------------------------
 * Handles.
 */

struct sim_domain {
    struct sim_domain *next;
    uint32_t domid;
    uint32_t nr_vcpus;
    bool hvm;
    uint64_t generation;
    struct hvf_table *table;
    size_t table_size;
    struct hvf_bptab *bptab;
    struct hvf_counters *counters;          /* nr_vcpus of them */
};

/* The part of libxencall we use, resolved with dlsym(). */
struct xencall_api {
    void *dl;
    __typeof__(xencall_open) *open;
    __typeof__(xencall_close) *close;
    __typeof__(xencall1) *call1;
    __typeof__(xencall_alloc_buffer) *alloc_buffer;
    __typeof__(xencall_free_buffer) *free_buffer;
};

struct hvf_handle {
    int backend;
    /* xen */
    struct xencall_api api;
    xencall_handle *xc;
    /* sim */
    struct hvf_sim_config cfg;
    struct sim_domain *domains;
    uint64_t seed;
};

uint32_t hvf_domctl_interface_version(void)
{
    return XEN_DOMCTL_INTERFACE_VERSION;
}

int hvf_backend(const struct hvf_handle *h)
{
    return h->backend;
}

/* libxencall reports through a logger; errors are returned instead. */
static void quiet_vmessage(struct xentoollog_logger *logger,
                           xentoollog_level level, int errnoval,
                           const char *context, const char *format,
                           va_list al)
{
    (void)logger; (void)level; (void)errnoval; (void)context;
    (void)format; (void)al;
}

static void quiet_destroy(struct xentoollog_logger *logger)
{
    (void)logger;
}

static struct xentoollog_logger quiet_logger = {
    .vmessage = quiet_vmessage,
    .progress = NULL,
    .destroy = quiet_destroy,
};

/*
 * Open libxencall and the privcmd device.  Returns -ELIBACC when
 * libxencall.so.1 cannot be loaded, and otherwise the errno of opening
 * privcmd: -ENOENT when there is no /dev/xen/privcmd (not running on Xen, or
 * the xen-privcmd driver is not loaded), -EACCES/-EPERM without privilege.
 */
int hvf_open_xen(struct hvf_handle **out)
{
    struct hvf_handle *h;
    int err;

    *out = NULL;
    h = calloc(1, sizeof(*h));
    if ( !h )
        return -ENOMEM;
    h->backend = HVF_BACKEND_XEN;

    h->api.dl = dlopen("libxencall.so.1", RTLD_NOW | RTLD_LOCAL);
    if ( !h->api.dl )
    {
        free(h);
        return -ELIBACC;
    }
    h->api.open = (__typeof__(h->api.open))dlsym(h->api.dl, "xencall_open");
    h->api.close = (__typeof__(h->api.close))dlsym(h->api.dl, "xencall_close");
    h->api.call1 = (__typeof__(h->api.call1))dlsym(h->api.dl, "xencall1");
    h->api.alloc_buffer = (__typeof__(h->api.alloc_buffer))
        dlsym(h->api.dl, "xencall_alloc_buffer");
    h->api.free_buffer = (__typeof__(h->api.free_buffer))
        dlsym(h->api.dl, "xencall_free_buffer");
    if ( !h->api.open || !h->api.close || !h->api.call1 ||
         !h->api.alloc_buffer || !h->api.free_buffer )
    {
        dlclose(h->api.dl);
        free(h);
        return -ELIBACC;
    }

    errno = 0;
    h->xc = h->api.open(&quiet_logger, 0);
    if ( !h->xc )
    {
        err = errno ? errno : ENOENT;
        dlclose(h->api.dl);
        free(h);
        return -err;
    }

    *out = h;
    return 0;
}

int hvf_open_sim(struct hvf_handle **out, const struct hvf_sim_config *cfg)
{
    struct hvf_handle *h;

    *out = NULL;
    h = calloc(1, sizeof(*h));
    if ( !h )
        return -ENOMEM;
    h->backend = HVF_BACKEND_SIM;
    if ( cfg )
        h->cfg = *cfg;
    if ( !h->cfg.domctl_version )
        h->cfg.domctl_version = XEN_DOMCTL_INTERFACE_VERSION;
    if ( !h->cfg.abi_version )
        h->cfg.abi_version = XEN_HVFILTER_INTERFACE_VERSION;
    if ( !h->cfg.kinds )
        h->cfg.kinds = (1u << XEN_HVFILTER_EV_NR) - 1;
    h->seed = h->cfg.seed ? h->cfg.seed : 0x68766669u;
    *out = h;
    return 0;
}

static void sim_domain_free(struct sim_domain *d)
{
    free(d->table);
    free(d->bptab);
    free(d->counters);
    free(d);
}

void hvf_close(struct hvf_handle *h)
{
    struct sim_domain *d, *next;

    if ( !h )
        return;
    if ( h->backend == HVF_BACKEND_XEN )
    {
        h->api.close(h->xc);
        dlclose(h->api.dl);
    }
    for ( d = h->domains; d; d = next )
    {
        next = d->next;
        sim_domain_free(d);
    }
    free(h);
}

/* ------------------------------------------------------------------------
 * Payload buffers: hypercall-safe memory for xen, plain memory for sim.
 */

static void *buf_alloc(struct hvf_handle *h, size_t size)
{
    void *p;

    if ( !size )
        size = 1;
    if ( h->backend == HVF_BACKEND_XEN )
    {
        p = h->api.alloc_buffer(h->xc, size);
        if ( p )
            memset(p, 0, size);
        return p;
    }
    return calloc(1, size);
}

static void buf_free(struct hvf_handle *h, void *p)
{
    if ( !p )
        return;
    if ( h->backend == HVF_BACKEND_XEN )
        h->api.free_buffer(h->xc, p);
    else
        free(p);
}

/* A copy of caller memory in a payload buffer; NULL on ENOMEM. */
static void *buf_copy(struct hvf_handle *h, const void *src, size_t size)
{
    void *p = buf_alloc(h, size);

    if ( p && size )
        memcpy(p, src, size);
    return p;
}

/* ------------------------------------------------------------------------
 * The simulated hypervisor.
 */

static struct sim_domain *sim_find(struct hvf_handle *h, uint32_t domid)
{
    struct sim_domain *d;

    for ( d = h->domains; d; d = d->next )
        if ( d->domid == domid )
            return d;
    return NULL;
}

int hvf_sim_domain_create(struct hvf_handle *h, uint32_t domid,
                          uint32_t nr_vcpus, bool hvm)
{
    struct sim_domain *d;

    if ( h->backend != HVF_BACKEND_SIM )
        return -EOPNOTSUPP;
    if ( !nr_vcpus || nr_vcpus > 4096 || domid >= 0x7ff0 )
        return -EINVAL;
    if ( sim_find(h, domid) )
        return -EEXIST;
    d = calloc(1, sizeof(*d));
    if ( !d )
        return -ENOMEM;
    d->counters = calloc(nr_vcpus, sizeof(*d->counters));
    if ( !d->counters )
    {
        free(d);
        return -ENOMEM;
    }
    d->domid = domid;
    d->nr_vcpus = nr_vcpus;
    d->hvm = hvm;
    d->next = h->domains;
    h->domains = d;
    return 0;
}

int hvf_sim_domain_destroy(struct hvf_handle *h, uint32_t domid)
{
    struct sim_domain **pp, *d;

    if ( h->backend != HVF_BACKEND_SIM )
        return -EOPNOTSUPP;
    for ( pp = &h->domains; (d = *pp); pp = &d->next )
        if ( d->domid == domid )
        {
            *pp = d->next;
            sim_domain_free(d);
            return 0;
        }
    return -ESRCH;
}

static uint64_t sim_mem_bytes(struct hvf_handle *h)
{
    struct sim_domain *d;
    uint64_t n = 0;

    for ( d = h->domains; d; d = d->next )
        n += d->table_size + (d->bptab ? sizeof(*d->bptab) : 0);
    return n;
}

static int sim_table_replace(struct hvf_handle *h, struct sim_domain *d,
                             const struct xen_hvfilter_table *tb)
{
    const struct xen_hvfilter_rule *rules = tb->rules.p;
    const struct xen_hvfilter_set *sets = tb->sets.p;
    const uint64_t *keys = tb->keys.p;
    struct hvf_table *t = NULL;
    size_t size = 0;
    int rc;

    /* Xen's order: the counts are bounded before any handle is read. */
    if ( tb->pad )
        return -EINVAL;
    if ( tb->nr_rules > XEN_HVFILTER_MAX_RULES ||
         tb->nr_sets > XEN_HVFILTER_MAX_SETS )
        return -E2BIG;
    if ( (tb->nr_rules && !rules) || (tb->nr_sets && !sets) ||
         (tb->nr_keys && !keys) )
        return -EFAULT;
    rc = hvf_table_check(rules, tb->nr_rules, sets, tb->nr_sets, tb->nr_keys,
                         h->cfg.kinds, NULL, NULL);
    if ( rc )
        return rc;

    if ( tb->nr_rules || tb->nr_sets )
    {
        size = hvf_table_size(sets, tb->nr_sets);
        t = aligned_alloc(64, (size + 63) & ~(size_t)63);
        if ( !t )
            return -ENOMEM;
        memset(t, 0, size);
        rc = hvf_table_init(t, size, rules, tb->nr_rules, sets, tb->nr_sets,
                            keys, tb->nr_keys, h->seed + d->domid,
                            d->generation + 1);
        if ( rc )
        {
            free(t);
            return rc;
        }
    }

    /* The swap: no evaluation runs concurrently in the simulator. */
    free(d->table);
    d->table = t;
    d->table_size = size;
    d->generation++;
    return 0;
}

static int sim_set_op(struct sim_domain *d, unsigned int op,
                      const struct xen_hvfilter_set_op *s)
{
    if ( op == XEN_HVFILTER_OP_set_flush )
    {
        if ( s->nr_keys || s->keys.p )
            return -EINVAL;
        return hvf_set_flush(d->table, s->set_id);
    }
    /* Xen's order: the batch size first, then the set. */
    if ( !s->nr_keys || s->nr_keys > XEN_HVFILTER_MAX_SET_ENTRIES )
        return -EINVAL;
    if ( !d->table || s->set_id >= d->table->nr_sets )
        return -ENOENT;
    if ( !s->keys.p )
        return -EFAULT;
    if ( op == XEN_HVFILTER_OP_set_add )
        return hvf_set_add(d->table, s->set_id, s->keys.p, s->nr_keys);
    return hvf_set_remove(d->table, s->set_id, s->keys.p, s->nr_keys);
}

static int sim_bp_op(struct hvf_handle *h, struct sim_domain *d,
                     unsigned int op, const struct xen_hvfilter_bp *bp)
{
    int rc;

    if ( op == XEN_HVFILTER_OP_bp_remove )
    {
        if ( (rc = hvf_bp_check(bp, true)) )
            return rc;
        if ( !d->bptab )
            return -ENOENT;
        return hvf_bp_remove(d->bptab, bp->gpa);
    }
    if ( (rc = hvf_bp_check(bp, false)) )
        return rc;
    if ( !d->bptab )
    {
        d->bptab = calloc(1, sizeof(*d->bptab));
        if ( !d->bptab )
            return -ENOMEM;
        hvf_bptab_init(d->bptab, h->seed ^ ((uint64_t)d->domid << 32));
    }
    return hvf_bp_add(d->bptab, bp);
}

static void sim_stats(struct sim_domain *d, struct xen_hvfilter_stats *st)
{
    unsigned int i;

    memset(st, 0, sizeof(*st));
    st->generation = d->generation;
    st->nr_rules = d->table ? d->table->nr_rules : 0;
    for ( i = 0; i < d->nr_vcpus; i++ )
        hvf_stats_add(st, &d->counters[i]);
}

/*
 * The hypervisor's part: what Xen's do_domctl() and the hvfilter handler do
 * with the struct xen_domctl that the xen backend would pass to hypercall
 * 36, in the order the header documents.  The union is copied back to the
 * caller, as Xen does, also on errors.
 */
static int sim_domctl(struct hvf_handle *h, struct xen_domctl *dc)
{
    struct xen_domctl_hvfilter_op *op = (struct xen_domctl_hvfilter_op *)&dc->u;
    struct sim_domain *d;
    unsigned int i;
    size_t used;

    /* do_domctl(): version, privilege, then the command. */
    if ( dc->interface_version != h->cfg.domctl_version )
        return -EACCES;
    if ( h->cfg.unprivileged )
        return -EPERM;
    if ( h->cfg.unpatched || dc->cmd != XEN_DOMCTL_hvfilter_op )
        return -ENOSYS;
    if ( dc->domain == 0 )
        return -EPERM;              /* hvfilter never targets dom0 */
    if ( !(d = sim_find(h, dc->domain)) )
        return -ESRCH;
    /*
     * Minor versions only add; the Xen side compares the major half too, and
     * get_info reports the hypervisor's version even when they differ.
     */
    if ( XEN_HVFILTER_VERSION_MAJOR(op->abi_version) !=
         XEN_HVFILTER_VERSION_MAJOR(h->cfg.abi_version) )
    {
        if ( op->op == XEN_HVFILTER_OP_get_info )
        {
            memset(&op->u.info, 0, sizeof(op->u.info));
            op->u.info.abi_version = h->cfg.abi_version;
        }
        return -EPROTONOSUPPORT;
    }
    if ( !d->hvm )
        return -EOPNOTSUPP;

    /* As hvfilter_domctl(): the union's bytes past the op's member are 0. */
    switch ( op->op )
    {
    case XEN_HVFILTER_OP_table_replace:
        used = sizeof(op->u.table);
        break;
    case XEN_HVFILTER_OP_set_add:
    case XEN_HVFILTER_OP_set_remove:
    case XEN_HVFILTER_OP_set_flush:
        used = sizeof(op->u.set);
        break;
    case XEN_HVFILTER_OP_bp_add:
    case XEN_HVFILTER_OP_bp_remove:
        used = sizeof(op->u.bp);
        break;
    case XEN_HVFILTER_OP_stats_get:
    case XEN_HVFILTER_OP_stats_reset:
        used = sizeof(op->u.stats);
        break;
    default:
        used = sizeof(op->u.pad);   /* get_info's union is output only */
        break;
    }
    for ( i = used; i < sizeof(op->u.pad); i++ )
        if ( op->u.pad[i] )
            return -EINVAL;

    switch ( op->op )
    {
    case XEN_HVFILTER_OP_get_info:
    {
        struct xen_hvfilter_info *in = &op->u.info;

        memset(in, 0, sizeof(*in));
        in->abi_version = h->cfg.abi_version;
        in->max_rules = XEN_HVFILTER_MAX_RULES;
        in->max_conds = XEN_HVFILTER_MAX_CONDS;
        in->max_total_conds = XEN_HVFILTER_MAX_TOTAL_CONDS;
        in->max_sets = XEN_HVFILTER_MAX_SETS;
        in->max_set_entries = XEN_HVFILTER_MAX_SET_ENTRIES;
        in->max_breakpoints = XEN_HVFILTER_MAX_BREAKPOINTS;
        in->kinds = h->cfg.kinds;
        for ( i = 0; i < XEN_HVFILTER_ACT_NR; i++ )
            if ( hvf_action_kinds[i] & h->cfg.kinds )
                in->actions |= 1u << i;
        in->nr_rules = d->table ? d->table->nr_rules : 0;
        in->nr_sets = d->table ? d->table->nr_sets : 0;
        in->nr_breakpoints = d->bptab ? hvf_bp_count(d->bptab) : 0;
        in->generation = d->generation;
        in->mem_bytes = sim_mem_bytes(h);
        return 0;
    }

    case XEN_HVFILTER_OP_table_replace:
        return sim_table_replace(h, d, &op->u.table);

    case XEN_HVFILTER_OP_set_add:
    case XEN_HVFILTER_OP_set_remove:
    case XEN_HVFILTER_OP_set_flush:
        return sim_set_op(d, op->op, &op->u.set);

    case XEN_HVFILTER_OP_bp_add:
    case XEN_HVFILTER_OP_bp_remove:
        return sim_bp_op(h, d, op->op, &op->u.bp);

    case XEN_HVFILTER_OP_stats_get:
        if ( !op->u.stats.buf.p )
            return -EFAULT;
        sim_stats(d, op->u.stats.buf.p);
        return 0;

    case XEN_HVFILTER_OP_stats_reset:
        if ( op->u.stats.buf.p )
            return -EINVAL;
        for ( i = 0; i < d->nr_vcpus; i++ )
            hvf_counters_reset(&d->counters[i]);
        return 0;
    }

    return -EINVAL;
}

/* ------------------------------------------------------------------------
 * Issuing one operation.
 */

/*
 * Issue one hvfilter operation: wrap it in a struct xen_domctl, in
 * hypercall-safe memory (as libxc bounces it), and either make hypercall 36
 * (xen) or hand the very same struct to the simulated hypervisor (sim).
 * The union is copied back in both cases: get_info's answer, and what Xen
 * leaves there on errors.
 */
static int issue_op(struct hvf_handle *h, uint32_t domid,
                    struct xen_domctl_hvfilter_op *op)
{
    struct xen_domctl *dc;
    int rc;

    if ( domid > 0xffff )
        return -ESRCH;
    dc = buf_alloc(h, sizeof(*dc));
    if ( !dc )
        return -ENOMEM;
    dc->cmd = XEN_DOMCTL_hvfilter_op;
    dc->interface_version = XEN_DOMCTL_INTERFACE_VERSION;
    dc->domain = (domid_t)domid;
    memcpy(&dc->u, op, sizeof(*op));

    if ( h->backend == HVF_BACKEND_XEN )
    {
        errno = 0;
        rc = h->api.call1(h->xc, __HYPERVISOR_domctl, (uint64_t)(uintptr_t)dc);
        if ( rc < 0 )
            rc = errno ? -errno : -EIO;
        else
            rc = 0;
    }
    else
        rc = sim_domctl(h, dc);

    memcpy(op, &dc->u, sizeof(*op));
    buf_free(h, dc);
    return rc;
}

static int do_op(struct hvf_handle *h, uint32_t domid,
                 struct xen_domctl_hvfilter_op *op)
{
    op->abi_version = XEN_HVFILTER_INTERFACE_VERSION;
    return issue_op(h, domid, op);
}

/*
 * The payload exactly as the caller built it, abi_version and padding
 * included: for tests of the hypervisor's own checks.  Handles in the union
 * are passed through unchanged, so they must be null or point to memory the
 * hypervisor may not read (the checks tested come first).
 */
int hvf_op_raw(struct hvf_handle *h, uint32_t domid,
               struct xen_domctl_hvfilter_op *op)
{
    return issue_op(h, domid, op);
}

int hvf_op_get_info(struct hvf_handle *h, uint32_t domid,
                    struct xen_hvfilter_info *out)
{
    struct xen_domctl_hvfilter_op op;
    int rc;

    memset(&op, 0, sizeof(op));
    op.op = XEN_HVFILTER_OP_get_info;
    rc = do_op(h, domid, &op);
    /* On -EPROTONOSUPPORT, info.abi_version is the hypervisor's (if set). */
    if ( !rc || rc == -EPROTONOSUPPORT )
        *out = op.u.info;
    return rc;
}

int hvf_op_table_replace(struct hvf_handle *h, uint32_t domid,
                         const struct xen_hvfilter_rule *rules,
                         unsigned int nr_rules,
                         const struct xen_hvfilter_set *sets,
                         unsigned int nr_sets,
                         const uint64_t *keys, unsigned int nr_keys)
{
    struct xen_domctl_hvfilter_op op;
    void *br = NULL, *bs = NULL, *bk = NULL;
    int rc = -ENOMEM;

    /* Payload sizes are bounded before allocating; Xen checks them again. */
    if ( nr_rules > XEN_HVFILTER_MAX_RULES || nr_sets > XEN_HVFILTER_MAX_SETS ||
         nr_keys > XEN_HVFILTER_MAX_SETS * XEN_HVFILTER_MAX_SET_ENTRIES )
        return -E2BIG;

    memset(&op, 0, sizeof(op));
    op.op = XEN_HVFILTER_OP_table_replace;
    op.u.table.nr_rules = nr_rules;
    op.u.table.nr_sets = nr_sets;
    op.u.table.nr_keys = nr_keys;
    if ( nr_rules &&
         !(br = buf_copy(h, rules, sizeof(*rules) * nr_rules)) )
        goto out;
    if ( nr_sets && !(bs = buf_copy(h, sets, sizeof(*sets) * nr_sets)) )
        goto out;
    if ( nr_keys && !(bk = buf_copy(h, keys, sizeof(*keys) * nr_keys)) )
        goto out;
    set_xen_guest_handle(op.u.table.rules, br);
    set_xen_guest_handle(op.u.table.sets, bs);
    set_xen_guest_handle(op.u.table.keys, bk);
    rc = do_op(h, domid, &op);

 out:
    buf_free(h, br);
    buf_free(h, bs);
    buf_free(h, bk);
    return rc;
}

static int set_op(struct hvf_handle *h, uint32_t domid, unsigned int which,
                  uint32_t set_id, const uint64_t *keys, unsigned int nr)
{
    struct xen_domctl_hvfilter_op op;
    void *bk = NULL;
    int rc;

    if ( nr > XEN_HVFILTER_MAX_SET_ENTRIES )
        return -EINVAL;
    memset(&op, 0, sizeof(op));
    op.op = which;
    op.u.set.set_id = set_id;
    op.u.set.nr_keys = nr;
    if ( nr && !(bk = buf_copy(h, keys, sizeof(*keys) * nr)) )
        return -ENOMEM;
    set_xen_guest_handle(op.u.set.keys, bk);
    rc = do_op(h, domid, &op);
    buf_free(h, bk);
    return rc;
}

int hvf_op_set_add(struct hvf_handle *h, uint32_t domid, uint32_t set_id,
                   const uint64_t *keys, unsigned int nr_keys)
{
    return set_op(h, domid, XEN_HVFILTER_OP_set_add, set_id, keys, nr_keys);
}

int hvf_op_set_remove(struct hvf_handle *h, uint32_t domid, uint32_t set_id,
                      const uint64_t *keys, unsigned int nr_keys)
{
    return set_op(h, domid, XEN_HVFILTER_OP_set_remove, set_id, keys, nr_keys);
}

int hvf_op_set_flush(struct hvf_handle *h, uint32_t domid, uint32_t set_id)
{
    return set_op(h, domid, XEN_HVFILTER_OP_set_flush, set_id, NULL, 0);
}

int hvf_op_bp_add(struct hvf_handle *h, uint32_t domid,
                  const struct xen_hvfilter_bp *bp)
{
    struct xen_domctl_hvfilter_op op;

    memset(&op, 0, sizeof(op));
    op.op = XEN_HVFILTER_OP_bp_add;
    op.u.bp = *bp;
    return do_op(h, domid, &op);
}

int hvf_op_bp_remove(struct hvf_handle *h, uint32_t domid, uint64_t gpa)
{
    struct xen_domctl_hvfilter_op op;

    memset(&op, 0, sizeof(op));
    op.op = XEN_HVFILTER_OP_bp_remove;
    op.u.bp.gpa = gpa;
    return do_op(h, domid, &op);
}

int hvf_op_stats_get(struct hvf_handle *h, uint32_t domid,
                     struct xen_hvfilter_stats *out)
{
    struct xen_domctl_hvfilter_op op;
    struct xen_hvfilter_stats *buf;
    int rc;

    buf = buf_alloc(h, sizeof(*buf));
    if ( !buf )
        return -ENOMEM;
    memset(&op, 0, sizeof(op));
    op.op = XEN_HVFILTER_OP_stats_get;
    set_xen_guest_handle(op.u.stats.buf, buf);
    rc = do_op(h, domid, &op);
    if ( !rc )
        memcpy(out, buf, sizeof(*out));
    buf_free(h, buf);
    return rc;
}

int hvf_op_stats_reset(struct hvf_handle *h, uint32_t domid)
{
    struct xen_domctl_hvfilter_op op;

    memset(&op, 0, sizeof(op));
    op.op = XEN_HVFILTER_OP_stats_reset;
    return do_op(h, domid, &op);
}

/* ------------------------------------------------------------------------
 * Feeding events to a simulated domain.
 */

int hvf_sim_feed(struct hvf_handle *h, uint32_t domid,
                 const struct hvf_event *evs, size_t nr,
                 struct hvf_verdict *verdicts, hvf_deliver_fn deliver,
                 void *ctx, size_t *nr_done)
{
    struct sim_domain *d;
    struct hvf_verdict v;
    size_t i;

    if ( nr_done )
        *nr_done = 0;
    if ( h->backend != HVF_BACKEND_SIM )
        return -EOPNOTSUPP;
    if ( !(d = sim_find(h, domid)) )
        return -ESRCH;

    for ( i = 0; i < nr; i++ )
    {
        const struct hvf_event *ev = &evs[i];
        struct hvf_verdict *vp = verdicts ? &verdicts[i] : &v;

        /* What Xen could never raise is a caller error, not an event. */
        if ( ev->kind >= XEN_HVFILTER_EV_NR ||
             !(h->cfg.kinds & (1u << ev->kind)) ||
             ev->f[XEN_HVFILTER_FIELD_VCPU] >= d->nr_vcpus )
            return -EINVAL;

        hvf_eval(d->table, d->bptab,
                 &d->counters[ev->f[XEN_HVFILTER_FIELD_VCPU]], ev, vp);
        if ( nr_done )
            *nr_done = i + 1;
        if ( deliver && vp->action == XEN_HVFILTER_ACT_FORWARD &&
             deliver(ctx, domid, ev, vp) )
            break;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * The workload: a model of the lab's test guest (lab/guest/README.md).
 *
 * Process 0 is the target, processes 1..N are busy.  Each process p has a
 * kernel root K(p) = cr3_base + p * cr3_stride and a user root
 * U(p) = K(p) | 1 << 12 (Linux KPTI; with pcid, K also carries PCID p + 1
 * and U bit 11, as Linux does).  Busy slices run round robin, N per round;
 * the target (if present) runs before busy slice 0, M, 2M, ... (M = gap).
 * One slice of process p:
 *
 *   CR3 write  prev -> K        the context switch
 *   kpti: CR3 write  K -> U     return to user space
 *   kpti: CR3 write  U -> K     system call
 *   calls times: breakpoint at bp_rip (the kernel function), CR3 = K
 *   calls2 times: breakpoint at bp2_rip (the second kernel function)
 *   cpuid times: CPUID leaf 0
 *   msr times: a write to LSTAR (0xc0000082), a new value each time
 *
 * so (1 + 2 * kpti) CR3 writes and calls + calls2 breakpoints per slice.  Slices
 * are dealt to the vCPUs round robin (the lab guest has one).  Before the
 * first slice, vCPU 0 writes boot_cr3 (the guest's boot page tables; the
 * old value is 0, paging was off), as the lab guest does.
 */

struct hvf_workload {
    struct hvf_workload_params p;
    uint64_t busy;              /* busy slices started */
    uint64_t total_busy;        /* rounds * nr_busy */
    uint32_t proc;              /* process of the current slice */
    uint32_t step;              /* within the current slice */
    bool target_done;           /* the target slice before `busy` ran */
    bool in_slice;
    bool booted;                /* the boot CR3 write was generated */
    uint64_t lstar;             /* MSR writes so far: the next value */
    uint64_t *lstar_prev;       /* per vCPU: LSTAR's current value */
    uint64_t slice;             /* slices started, picks the vCPU */
    uint32_t vcpu;
    uint64_t *prev;             /* per vCPU: current CR3 */
};

#define WL_BOOT_RIP    0x100000ULL            /* the guest's 32-bit entry */
#define WL_EVENTS_RIP  0xffffffff80105000ULL  /* its CPUID/WRMSR code */
#define WL_MSR_LSTAR   0xc0000082ULL
#define WL_LSTAR_BASE  0xffffffff81000000ULL
#define WL_SWITCH_RIP  0xffffffff80103000ULL  /* the guest's scheduler */
#define WL_ENTRY_RIP   0xffffffff80104000ULL  /* its kernel entry code */

uint64_t hvf_workload_root(const struct hvf_workload_params *p,
                           uint32_t proc, bool user)
{
    uint64_t r = p->cr3_base + (uint64_t)proc * p->cr3_stride;

    if ( p->pcid )
        r |= (proc + 1) & 0x7ff;
    if ( user )
        r |= (1ULL << 12) | (p->pcid ? (1ULL << 11) : 0);
    return r;
}

int hvf_workload_new(const struct hvf_workload_params *p,
                     struct hvf_workload **out)
{
    struct hvf_workload *w;
    uint32_t i;

    *out = NULL;
    if ( !p->nr_busy || !p->gap || !p->nr_vcpus || p->nr_vcpus > 4096 ||
         (p->cr3_base & 0x1fff) || !p->cr3_stride || (p->cr3_stride & 0x1fff) ||
         ((p->bp_gpa ^ p->bp_rip) & 0xfff) || ((p->bp2_gpa ^ p->bp2_rip) & 0xfff) ||
         p->rounds > (1ULL << 40) )
        return -EINVAL;
    w = calloc(1, sizeof(*w));
    if ( !w )
        return -ENOMEM;
    w->prev = calloc(p->nr_vcpus, sizeof(*w->prev));
    w->lstar_prev = calloc(p->nr_vcpus, sizeof(*w->lstar_prev));
    if ( !w->prev || !w->lstar_prev )
    {
        free(w->prev);
        free(w->lstar_prev);
        free(w);
        return -ENOMEM;
    }
    w->p = *p;
    w->total_busy = p->rounds * p->nr_busy;
    for ( i = 0; i < p->nr_vcpus; i++ )
    {
        w->prev[i] = p->boot_cr3;
        w->lstar_prev[i] = WL_LSTAR_BASE;
    }
    *out = w;
    return 0;
}

void hvf_workload_free(struct hvf_workload *w)
{
    if ( !w )
        return;
    free(w->prev);
    free(w->lstar_prev);
    free(w);
}

/* Start the next slice; false when the workload is over. */
static bool wl_next_slice(struct hvf_workload *w)
{
    if ( w->busy >= w->total_busy )
        return false;
    if ( w->p.target && !w->target_done && w->busy % w->p.gap == 0 )
    {
        w->proc = 0;
        w->target_done = true;
    }
    else
    {
        w->proc = 1 + (uint32_t)(w->busy % w->p.nr_busy);
        w->busy++;
        w->target_done = false;
    }
    w->vcpu = w->slice++ % w->p.nr_vcpus;
    w->step = 0;
    w->in_slice = true;
    return true;
}

static void wl_cr3(struct hvf_workload *w, struct hvf_event *e, uint64_t new,
                   uint64_t rip)
{
    uint64_t old = w->prev[w->vcpu];

    memset(e, 0, sizeof(*e));
    e->kind = XEN_HVFILTER_EV_CR3_WRITE;
    e->f[XEN_HVFILTER_FIELD_VCPU] = w->vcpu;
    e->f[XEN_HVFILTER_FIELD_CR3] = old;
    e->f[XEN_HVFILTER_FIELD_RIP] = rip;
    e->f[XEN_HVFILTER_FIELD_CPL] = 0;
    e->f[XEN_HVFILTER_FIELD_NEW_VALUE] = new;
    e->f[XEN_HVFILTER_FIELD_OLD_VALUE] = old;
    w->prev[w->vcpu] = new;
}

size_t hvf_workload_next(struct hvf_workload *w, struct hvf_event *out,
                         size_t cap)
{
    uint32_t writes = w->p.kpti ? 3 : 1;
    uint32_t bp1 = writes + w->p.calls, bp2 = bp1 + w->p.calls2;
    uint32_t cpuids = bp2 + w->p.cpuid, len = cpuids + w->p.msr;
    size_t n = 0;

    if ( !w->booted && cap && w->total_busy )
    {
        w->booted = true;
        w->vcpu = 0;
        w->prev[0] = 0;
        wl_cr3(w, &out[n++], w->p.boot_cr3, WL_BOOT_RIP);
    }

    while ( n < cap )
    {
        struct hvf_event *e = &out[n];
        uint64_t k, u;
        uint32_t s;

        if ( !w->in_slice || w->step >= len )
        {
            w->in_slice = false;
            if ( !wl_next_slice(w) )
                break;
        }
        k = hvf_workload_root(&w->p, w->proc, false);
        u = hvf_workload_root(&w->p, w->proc, true);
        s = w->step++;

        if ( s == 0 )
            wl_cr3(w, e, k, WL_SWITCH_RIP);
        else if ( s < writes )
            wl_cr3(w, e, s == 1 ? u : k, WL_ENTRY_RIP);
        else
        {
            memset(e, 0, sizeof(*e));
            e->f[XEN_HVFILTER_FIELD_VCPU] = w->vcpu;
            e->f[XEN_HVFILTER_FIELD_CR3] = k;
            e->f[XEN_HVFILTER_FIELD_CPL] = 0;
            if ( s < bp2 )
            {
                uint64_t rip = s < bp1 ? w->p.bp_rip : w->p.bp2_rip;
                uint64_t gpa = s < bp1 ? w->p.bp_gpa : w->p.bp2_gpa;

                e->kind = XEN_HVFILTER_EV_BREAKPOINT;
                e->f[XEN_HVFILTER_FIELD_RIP] = rip;
                e->f[XEN_HVFILTER_FIELD_INDEX] = 1;
                e->f[XEN_HVFILTER_FIELD_GFN] = gpa >> HVF_PAGE_SHIFT;
                e->f[XEN_HVFILTER_FIELD_GLA] = rip;
            }
            else if ( s < cpuids )
            {
                e->kind = XEN_HVFILTER_EV_CPUID;
                e->f[XEN_HVFILTER_FIELD_RIP] = WL_EVENTS_RIP;
            }
            else
            {
                uint64_t v = WL_LSTAR_BASE + 0x10 * ++w->lstar;

                e->kind = XEN_HVFILTER_EV_MSR_WRITE;
                e->f[XEN_HVFILTER_FIELD_RIP] = WL_EVENTS_RIP + 0x10;
                e->f[XEN_HVFILTER_FIELD_INDEX] = WL_MSR_LSTAR;
                e->f[XEN_HVFILTER_FIELD_NEW_VALUE] = v;
                e->f[XEN_HVFILTER_FIELD_OLD_VALUE] = w->lstar_prev[w->vcpu];
                w->lstar_prev[w->vcpu] = v;
            }
        }
        n++;
    }
    return n;
}
