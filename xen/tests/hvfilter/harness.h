/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the userspace harness programs of the hvfilter
 * evaluator: building rules and tables, feeding events.
 */

#ifndef HVFILTER_HARNESS_H
#define HVFILTER_HARNESS_H

#include <stdio.h>
#include <stdlib.h>

#include "hvfilter_eval.h"

#define KIND(k)   (1u << XEN_HVFILTER_EV_ ## k)

/* A table under construction, with owned memory once installed. */
struct htab {
    struct xen_hvfilter_rule rules[XEN_HVFILTER_MAX_RULES + 1];
    struct xen_hvfilter_set sets[XEN_HVFILTER_MAX_SETS + 1];
    uint64_t keys[XEN_HVFILTER_MAX_SETS * XEN_HVFILTER_MAX_SET_ENTRIES];
    unsigned int nr_rules, nr_sets, nr_keys;
    struct hvf_table *t;           /* installed table, or NULL */
    size_t size;
};

static inline struct xen_hvfilter_rule *
h_rule(struct htab *h, uint32_t kinds, unsigned int action)
{
    struct xen_hvfilter_rule *r = &h->rules[h->nr_rules++];

    memset(r, 0, sizeof(*r));
    r->kinds = kinds;
    r->action = action;
    return r;
}

static inline struct xen_hvfilter_cond *
h_cond(struct xen_hvfilter_rule *r, unsigned int field, unsigned int cmp,
       uint64_t mask, uint64_t value, uint64_t value2)
{
    struct xen_hvfilter_cond *c = &r->conds[r->nr_conds++];

    memset(c, 0, sizeof(*c));
    c->field = field;
    c->cmp = cmp;
    c->mask = mask;
    c->value = value;
    c->value2 = value2;
    return c;
}

static inline struct xen_hvfilter_cond *
h_in_set(struct xen_hvfilter_rule *r, unsigned int field, unsigned int set)
{
    struct xen_hvfilter_cond *c =
        h_cond(r, field, XEN_HVFILTER_CMP_IN_SET, 0, 0, 0);

    c->set_id = set;
    return c;
}

/* Declare a set; its initial keys are appended with h_key(). */
static inline unsigned int h_set(struct htab *h, const char *name,
                                 uint64_t mask, uint32_t capacity)
{
    struct xen_hvfilter_set *s = &h->sets[h->nr_sets];

    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->mask = mask;
    s->capacity = capacity;
    return h->nr_sets++;
}

/* Append an initial key to the last declared set. */
static inline void h_key(struct htab *h, uint64_t key)
{
    h->keys[h->nr_keys++] = key;
    h->sets[h->nr_sets - 1].nr_init++;
}

static inline void h_free(struct htab *h)
{
    free(h->t);
    h->t = NULL;
}

/* Check and build the table; returns the errno of the first failing step. */
static inline int h_install(struct htab *h, uint64_t generation)
{
    void *mem;
    int rc;

    rc = hvf_table_check(h->rules, h->nr_rules, h->sets, h->nr_sets,
                         h->nr_keys, (1u << XEN_HVFILTER_EV_NR) - 1,
                         NULL, NULL);
    if ( rc )
        return rc;
    h->size = hvf_table_size(h->sets, h->nr_sets);
    mem = aligned_alloc(64, (h->size + 63) & ~(size_t)63);
    if ( !mem )
        abort();
    memset(mem, 0, h->size);
    rc = hvf_table_init(mem, h->size, h->rules, h->nr_rules, h->sets,
                        h->nr_sets, h->keys, h->nr_keys, 0x5eed ^ generation,
                        generation);
    if ( rc )
    {
        free(mem);
        return rc;
    }
    h_free(h);
    h->t = mem;
    return 0;
}

static inline struct hvf_event h_event(unsigned int kind, uint64_t cr3)
{
    struct hvf_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.kind = kind;
    ev.f[XEN_HVFILTER_FIELD_CR3] = cr3;
    return ev;
}

#endif /* HVFILTER_HARNESS_H */
