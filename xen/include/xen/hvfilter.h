/* SPDX-License-Identifier: GPL-2.0 */
/*
 * xen/include/xen/hvfilter.h
 *
 * hvfilter: hypervisor-side filters for VM introspection events.  Interface
 * between the monitor code, which raises the events, and
 * xen/common/hvfilter.c, which keeps each domain's rules and decides events
 * with the evaluator.
 *
 * A monitor hook fills the kind-specific fields of a struct hvfilter_ev (see
 * the table in public/hvfilter.h) and calls hvfilter_event() before it claims
 * a vm_event ring slot.  hvfilter_event() adds the fields every event has
 * (vCPU, CR3, RIP, CPL) and answers one of:
 *  - XEN_HVFILTER_ACT_FORWARD: raise the event as without hvfilter;
 *  - XEN_HVFILTER_ACT_PASS:    complete the event as if nobody monitored it;
 *  - XEN_HVFILTER_ACT_EMULATE: (breakpoints only) execute the instruction in
 *                              *insn instead of the int3.
 * The hooks only call it when hvfilter_active(), a pointer test, holds.
 */

#ifndef __XEN_HVFILTER_H__
#define __XEN_HVFILTER_H__

#include <xen/sched.h>
#include <xen/types.h>
#include <public/hvfilter.h>

/* The kind-specific fields of one event; zero for fields a kind lacks. */
struct hvfilter_ev {
    unsigned int kind;          /* XEN_HVFILTER_EV_* */
    uint64_t new_value;
    uint64_t old_value;
    uint64_t index;
    uint64_t subindex;
    uint64_t gfn;
    uint64_t gla;
};

/* An EMULATE verdict: the registered instruction, zero padded. */
struct hvfilter_insn {
    unsigned int len;
    uint8_t bytes[16];
    int rule;                   /* the deciding rule */
};

#ifdef CONFIG_HVFILTER

int hvfilter_domctl(struct domain *d, struct xen_domctl_hvfilter_op *op);

/*
 * Free the domain's hvfilter state: on domain destruction and when the
 * monitor ring is disabled.  The domain must be paused or dying.
 */
void hvfilter_domain_destroy(struct domain *d);

/*
 * Decide one event of the current vCPU v.  insn may be NULL for every kind
 * but XEN_HVFILTER_EV_BREAKPOINT (the only kind that can be emulated).
 */
unsigned int hvfilter_event(struct vcpu *v, const struct hvfilter_ev *ev,
                            struct hvfilter_insn *insn);

/*
 * Xen's emulator could not execute the instruction of an EMULATE verdict,
 * so the event is forwarded instead: count it so.
 */
void hvfilter_emulate_failed(struct vcpu *v, const struct hvfilter_ev *ev,
                             const struct hvfilter_insn *insn);

/*
 * The bytes registered for the breakpoint at guest-physical address gpa
 * (zero-padded to 16), for a monitor that answers a breakpoint event with
 * EMULATE but no instruction data.  False when none is registered there.
 */
bool hvfilter_bp_insn(struct domain *d, uint64_t gpa,
                      uint8_t bytes[XEN_HVFILTER_MAX_INSN_LEN + 1]);

static inline bool hvfilter_active(const struct domain *d)
{
    return unlikely(d->hvfilter != NULL);
}

#else /* !CONFIG_HVFILTER */

static inline void hvfilter_domain_destroy(struct domain *d) {}

static inline unsigned int hvfilter_event(struct vcpu *v,
                                          const struct hvfilter_ev *ev,
                                          struct hvfilter_insn *insn)
{
    return XEN_HVFILTER_ACT_FORWARD;
}

static inline void hvfilter_emulate_failed(struct vcpu *v,
                                           const struct hvfilter_ev *ev,
                                           const struct hvfilter_insn *insn)
{
}

static inline bool hvfilter_bp_insn(struct domain *d, uint64_t gpa,
                                    uint8_t bytes[XEN_HVFILTER_MAX_INSN_LEN + 1])
{
    return false;
}

static inline bool hvfilter_active(const struct domain *d)
{
    return false;
}

#endif /* CONFIG_HVFILTER */

#endif /* __XEN_HVFILTER_H__ */

/*
 * Local variables:
 * mode: C
 * c-file-style: "BSD"
 * c-basic-offset: 4
 * indent-tabs-mode: nil
 * End:
 */
