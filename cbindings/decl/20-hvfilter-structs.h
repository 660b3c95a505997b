/*
 * cffi declarations, part 2: the structures of xen/include/public/hvfilter.h,
 * field for field (no "...;"), so that cffi checks every size and offset
 * against the header when the extension is built.
 *
 * On x86-64 uint64_aligned_t is uint64_t and XEN_GUEST_HANDLE_64(T) is
 * Xen's __guest_handle_T, a struct holding one pointer.
 */

typedef struct { uint64_t *p; } __guest_handle_uint64;

struct xen_hvfilter_cond {
    uint8_t field;
    uint8_t cmp;
    uint8_t flags;
    uint8_t set_id;
    uint32_t pad;
    uint64_t mask;
    uint64_t value;
    uint64_t value2;
};
typedef struct xen_hvfilter_cond xen_hvfilter_cond_t;

struct xen_hvfilter_rule {
    uint32_t kinds;
    uint8_t action;
    uint8_t fallback;
    uint8_t nr_conds;
    uint8_t pad0;
    uint32_t sample;
    uint32_t pad1;
    struct xen_hvfilter_cond conds[8];
};
typedef struct xen_hvfilter_rule xen_hvfilter_rule_t;
typedef struct { xen_hvfilter_rule_t *p; } __guest_handle_xen_hvfilter_rule_t;

struct xen_hvfilter_set {
    char name[16];
    uint64_t mask;
    uint32_t capacity;
    uint32_t nr_init;
    uint64_t pad;
};
typedef struct xen_hvfilter_set xen_hvfilter_set_t;
typedef struct { xen_hvfilter_set_t *p; } __guest_handle_xen_hvfilter_set_t;

struct xen_hvfilter_table {
    uint32_t nr_rules;
    uint32_t nr_sets;
    uint32_t nr_keys;
    uint32_t pad;
    __guest_handle_xen_hvfilter_rule_t rules;
    __guest_handle_xen_hvfilter_set_t sets;
    __guest_handle_uint64 keys;
};

struct xen_hvfilter_set_op {
    uint32_t set_id;
    uint32_t nr_keys;
    __guest_handle_uint64 keys;
};

struct xen_hvfilter_bp {
    uint64_t gpa;
    uint8_t insn_len;
    uint8_t pad[7];
    uint8_t insn[16];
};
typedef struct xen_hvfilter_bp xen_hvfilter_bp_t;

struct xen_hvfilter_counts {
    uint64_t seen;
    uint64_t forwarded;
    uint64_t passed;
    uint64_t emulated;
    uint64_t sampled_out;
    uint64_t fallbacks;
};
typedef struct xen_hvfilter_counts xen_hvfilter_counts_t;

struct xen_hvfilter_stats {
    uint64_t generation;
    uint32_t nr_rules;
    uint32_t pad;
    struct xen_hvfilter_counts kinds[12];
    struct xen_hvfilter_counts unmatched;
    struct xen_hvfilter_counts rules[64];
};
typedef struct xen_hvfilter_stats xen_hvfilter_stats_t;
typedef struct { xen_hvfilter_stats_t *p; } __guest_handle_xen_hvfilter_stats_t;

struct xen_hvfilter_stats_op {
    __guest_handle_xen_hvfilter_stats_t buf;
};

struct xen_hvfilter_info {
    uint32_t abi_version;
    uint32_t max_rules;
    uint32_t max_conds;
    uint32_t max_total_conds;
    uint32_t max_sets;
    uint32_t max_set_entries;
    uint32_t max_breakpoints;
    uint32_t kinds;
    uint32_t actions;
    uint32_t nr_rules;
    uint32_t nr_sets;
    uint32_t nr_breakpoints;
    uint64_t generation;
    uint64_t mem_bytes;
};

struct xen_domctl_hvfilter_op {
    uint32_t op;
    uint32_t abi_version;
    union {
        struct xen_hvfilter_info info;
        struct xen_hvfilter_table table;
        struct xen_hvfilter_set_op set;
        struct xen_hvfilter_bp bp;
        struct xen_hvfilter_stats_op stats;
        uint8_t pad[64];
    } u;
};
typedef struct xen_domctl_hvfilter_op xen_domctl_hvfilter_op_t;
