/*
 * cffi declarations, part 3: the parts of xen/common/hvfilter_eval.h that the
 * Python layer uses.  The evaluator itself is compiled into the extension
 * unchanged; Python calls hvf_table_check() to vet a compiled table with the
 * hypervisor's own code, and reads the evaluator's field/action tables.
 */

#define HVF_PAGE_SHIFT ...

struct hvf_event {
    unsigned int kind;
    uint64_t f[10];
};

struct hvf_verdict {
    unsigned int action;
    int rule;
    uint8_t insn_len;
    uint8_t insn[16];
};

int hvf_table_check(const struct xen_hvfilter_rule *rules,
                    unsigned int nr_rules,
                    const struct xen_hvfilter_set *sets, unsigned int nr_sets,
                    unsigned int nr_keys, uint32_t supported_kinds,
                    int *bad_rule, int *bad_cond);
int hvf_bp_check(const struct xen_hvfilter_bp *bp, bool remove);

extern const uint32_t hvf_field_kinds[10];
extern const uint8_t hvf_field_cmps[10];
extern const uint32_t hvf_action_kinds[4];
