/*
 * cffi declarations, part 4: the shim (cbindings/hvf_shim.h).
 */

#define HVF_BACKEND_XEN ...
#define HVF_BACKEND_SIM ...

struct hvf_handle;

struct hvf_sim_config {
    uint32_t domctl_version;
    uint32_t abi_version;
    uint32_t kinds;
    uint32_t unpatched;
    uint32_t unprivileged;
    uint32_t pad;
    uint64_t seed;
};

typedef int (*hvf_deliver_fn)(void *ctx, uint32_t domid,
                              const struct hvf_event *ev,
                              const struct hvf_verdict *v);

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

int hvf_open_xen(struct hvf_handle **out);
int hvf_open_sim(struct hvf_handle **out, const struct hvf_sim_config *cfg);
void hvf_close(struct hvf_handle *h);
int hvf_backend(const struct hvf_handle *h);
uint32_t hvf_domctl_interface_version(void);

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
int hvf_op_raw(struct hvf_handle *h, uint32_t domid,
               struct xen_domctl_hvfilter_op *op);

int hvf_sim_domain_create(struct hvf_handle *h, uint32_t domid,
                          uint32_t nr_vcpus, bool hvm);
int hvf_sim_domain_destroy(struct hvf_handle *h, uint32_t domid);
int hvf_sim_feed(struct hvf_handle *h, uint32_t domid,
                 const struct hvf_event *evs, size_t nr,
                 struct hvf_verdict *verdicts, hvf_deliver_fn deliver,
                 void *ctx, size_t *nr_done);

int hvf_workload_new(const struct hvf_workload_params *p,
                     struct hvf_workload **out);
void hvf_workload_free(struct hvf_workload *w);
size_t hvf_workload_next(struct hvf_workload *w, struct hvf_event *out,
                         size_t cap);
uint64_t hvf_workload_root(const struct hvf_workload_params *p,
                           uint32_t proc, bool user);

/* Python side of the simulated monitor ring (see _binding.py). */
extern "Python" int _hvf_py_deliver(void *ctx, uint32_t domid,
                                    const struct hvf_event *ev,
                                    const struct hvf_verdict *v);
