/* SPDX-License-Identifier: MIT */
/*
 * hvf_shim.h: the C shim between Python (cffi) and the hypervisor.
 *
 * One function per hvfilter operation, every symbol prefixed hvf_, every
 * function returning 0 or a negative errno value.  Two backends sit behind
 * the same functions:
 *
 *   xen  issues XEN_DOMCTL_hvfilter_op through libxencall (dlopen()ed at run
 *        time, so that the extension builds and imports without Xen);
 *   sim  an in-process model of a hypervisor with one or more domains: it
 *        decodes the very same domctl payload, keeps the installed tables and
 *        runs the hypervisor's own evaluator (xen/common/hvfilter_eval.c) over
 *        events fed to it.
 *
 * The payloads (rules, sets, keys, statistics) travel in buffers obtained
 * from the backend (xencall_alloc_buffer() memory for xen) and are referred
 * to by guest handles, exactly as the hypervisor expects them.
 */

#ifndef HVF_SHIM_H
#define HVF_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hvfilter_eval.h"

#define HVF_BACKEND_XEN 1
#define HVF_BACKEND_SIM 2

/* An open connection to a hypervisor (real or simulated). */
struct hvf_handle;

/*
 * The simulated hypervisor's personality.  A zero field takes the default
 * (what a patched Xen 4.17 with this ABI would do), so that a zeroed struct
 * models the hypervisor the shim was built for; the other values model
 * other hypervisors, for testing a tool's error handling offline.
 */
struct hvf_sim_config {
    uint32_t domctl_version;  /* accepted interface_version (0: the shim's) */
    uint32_t abi_version;     /* hvfilter ABI (0: XEN_HVFILTER_INTERFACE_VERSION) */
    uint32_t kinds;           /* kinds the CPU can raise (0: all) */
    uint32_t unpatched;       /* 1: no hvfilter domctl, every op -ENOSYS */
    uint32_t unprivileged;    /* 1: the caller is not privileged, -EPERM */
    uint32_t pad;
    uint64_t seed;            /* hash seed */
};

/* Called for every event a simulated domain forwards to its monitor ring. */
typedef int (*hvf_deliver_fn)(void *ctx, uint32_t domid,
                              const struct hvf_event *ev,
                              const struct hvf_verdict *v);

/* Model of the lab's test guest, see hvf_workload_next(). */
struct hvf_workload_params {
    uint32_t nr_busy;         /* N busy processes (1..N), >= 1 */
    uint32_t target;          /* 1: process 0 is the target and runs */
    uint32_t gap;             /* M: the target runs before busy slice 0, M, 2M... */
    uint32_t calls;           /* calls per slice of the kernel function */
    uint32_t kpti;            /* 1: three CR3 writes per slice, 0: one */
    uint32_t nr_vcpus;        /* slices are dealt round robin over vCPUs, >= 1 */
    uint32_t pcid;            /* 1: roots carry Linux-style PCIDs */
    uint32_t calls2;          /* calls per slice of the second kernel function */
    uint32_t cpuid;           /* CPUIDs (leaf 0) per slice */
    uint32_t msr;             /* MSR writes (LSTAR) per slice */
    uint64_t rounds;          /* R rounds of N busy slices */
    uint64_t cr3_base;        /* kernel root of process 0, 8 KiB aligned */
    uint64_t cr3_stride;      /* distance between processes' roots, 8 KiB multiple */
    uint64_t boot_cr3;        /* written once by vCPU 0 before the first slice */
    uint64_t bp_gpa;          /* guest-physical address of the kernel function */
    uint64_t bp_rip;          /* its virtual address (same offset in the page) */
    uint64_t bp2_gpa;         /* the same for the second kernel function */
    uint64_t bp2_rip;
};

struct hvf_workload;

/* Handles. */
int hvf_open_xen(struct hvf_handle **out);
int hvf_open_sim(struct hvf_handle **out, const struct hvf_sim_config *cfg);
void hvf_close(struct hvf_handle *h);
int hvf_backend(const struct hvf_handle *h);
uint32_t hvf_domctl_interface_version(void);

/*
 * The hvfilter operations, on either backend.  hvf_op_get_info() also fills
 * *out when it fails with -EPROTONOSUPPORT, so that out->abi_version tells
 * the hypervisor's ABI version (0 if the hypervisor did not say).
 */
int hvf_op_get_info(struct hvf_handle *h, uint32_t domid,
                    struct xen_hvfilter_info *out);
int hvf_op_table_replace(struct hvf_handle *h, uint32_t domid,
                         const struct xen_hvfilter_rule *rules,
                         unsigned int nr_rules,
                         const struct xen_hvfilter_set *sets,
                         unsigned int nr_sets,
                         const uint64_t *keys, unsigned int nr_keys);
int hvf_op_set_add(struct hvf_handle *h, uint32_t domid, uint32_t set_id,
                   const uint64_t *keys, unsigned int nr_keys);
int hvf_op_set_remove(struct hvf_handle *h, uint32_t domid, uint32_t set_id,
                      const uint64_t *keys, unsigned int nr_keys);
int hvf_op_set_flush(struct hvf_handle *h, uint32_t domid, uint32_t set_id);
int hvf_op_bp_add(struct hvf_handle *h, uint32_t domid,
                  const struct xen_hvfilter_bp *bp);
int hvf_op_bp_remove(struct hvf_handle *h, uint32_t domid, uint64_t gpa);
int hvf_op_stats_get(struct hvf_handle *h, uint32_t domid,
                     struct xen_hvfilter_stats *out);
int hvf_op_stats_reset(struct hvf_handle *h, uint32_t domid);
/*
 * The payload as given (abi_version and padding too), for tests of the
 * hypervisor's checks; handles in it are passed through unchanged.
 */
int hvf_op_raw(struct hvf_handle *h, uint32_t domid,
               struct xen_domctl_hvfilter_op *op);

/* The simulator: domains and event feeding. */
int hvf_sim_domain_create(struct hvf_handle *h, uint32_t domid,
                          uint32_t nr_vcpus, bool hvm);
int hvf_sim_domain_destroy(struct hvf_handle *h, uint32_t domid);
int hvf_sim_feed(struct hvf_handle *h, uint32_t domid,
                 const struct hvf_event *evs, size_t nr,
                 struct hvf_verdict *verdicts, hvf_deliver_fn deliver,
                 void *ctx, size_t *nr_done);

/* The generated workload. */
int hvf_workload_new(const struct hvf_workload_params *p,
                     struct hvf_workload **out);
void hvf_workload_free(struct hvf_workload *w);
size_t hvf_workload_next(struct hvf_workload *w, struct hvf_event *out,
                         size_t cap);
uint64_t hvf_workload_root(const struct hvf_workload_params *p,
                           uint32_t proc, bool user);

#endif /* HVF_SHIM_H */
