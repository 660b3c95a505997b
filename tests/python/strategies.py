"""Hypothesis strategies for rules, programs, events and raw tables (shared)."""

from __future__ import annotations

from hypothesis import strategies as st

import hvfilter as hv
from hvfilter import LIMITS, ActionCode, Cmp, Field, Kind
from hvfilter._raw import RawCond, RawEvent, RawRule, RawSet, RawTable
from hvfilter.rules import FieldRef

MASK64 = (1 << 64) - 1

#: A small universe of values, so that random events hit random conditions.
VALUES = [0, 1, 3, 0x2000, 0x2003, 0x3000, 0x4000, 0x8000_0000_0000_2000, 0xFFF, MASK64]
MASKS = [MASK64, hv.PROCESS_MASK, 0xFF00, 0xFFF, 0x3000, 1]

values = st.one_of(st.sampled_from(VALUES), st.integers(0, MASK64))
small_values = st.sampled_from(VALUES)
masks = st.sampled_from(MASKS)

#: Kinds that every action may apply to (MEM_ACCESS takes forward only).
COMMON_KINDS = [k for k in Kind if k != Kind.MEM_ACCESS]


@st.composite
def value_sets(draw: st.DrawFn, name: str) -> hv.ValueSet:
    mask = draw(masks)
    vals = draw(st.lists(small_values, max_size=4))
    return hv.ValueSet(name, mask, tuple(vals), capacity=draw(st.integers(4, 16)))


@st.composite
def tests_for(draw: st.DrawFn, kinds: frozenset[Kind], sets: list[hv.ValueSet]) -> hv.Test:
    fields = [f for f in Field if kinds <= f.kinds]
    f = draw(st.sampled_from(fields))
    cmps = sorted(f.cmps - ({Cmp.IN_SET} if not sets else set()))
    cmp = draw(st.sampled_from(cmps))
    ref = FieldRef(f)
    if cmp == Cmp.IN_SET:
        t = ref.in_(draw(st.sampled_from(sets)))
    elif cmp == Cmp.EQ:
        m = draw(masks)
        t = ref.masked(m).eq(draw(small_values) & m)
    elif cmp == Cmp.RANGE:
        m = draw(masks)
        a, b = sorted((draw(small_values) & m, draw(small_values) & m))
        t = ref.masked(m).between(a, b)
    else:
        t = ref.any_bits(draw(masks))
    return ~t if draw(st.booleans()) else t


@st.composite
def conds_for(draw: st.DrawFn, kinds: frozenset[Kind], sets: list[hv.ValueSet],
              depth: int = 2) -> hv.Cond:
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(tests_for(kinds, sets))
    a = draw(conds_for(kinds, sets, depth - 1))
    b = draw(conds_for(kinds, sets, depth - 1))
    op = draw(st.sampled_from(["and", "or", "xor", "not"]))
    if op == "and":
        return a & b
    if op == "or":
        return a | b
    if op == "xor":
        return a ^ b
    return ~(a & b)


@st.composite
def actions_for(draw: st.DrawFn, kinds: frozenset[Kind]) -> hv.Action:
    opts: list[hv.Action] = [hv.forward]
    if kinds <= ActionCode.PASS.kinds:
        opts += [hv.pass_, hv.sample(draw(st.integers(1, 4)))]
    if kinds <= ActionCode.EMULATE.kinds:
        opts += [hv.emulate, hv.Emulate(hv.forward)]
    return draw(st.sampled_from(opts))


@st.composite
def rules_lists(draw: st.DrawFn, kinds_pool: list[Kind] | None = None,
                max_rules: int = 6) -> list[hv.Rule]:
    pool = kinds_pool or [Kind.CR3_WRITE, Kind.BREAKPOINT, Kind.MSR_WRITE, Kind.CPUID]
    sets = [draw(value_sets(f"s{i}")) for i in range(draw(st.integers(0, 2)))]
    out = []
    for _ in range(draw(st.integers(1, max_rules))):
        kinds = frozenset(draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2)))
        cond = draw(st.one_of(st.just(hv.always), conds_for(kinds, sets)))
        out.append(hv.Rule(kinds, draw(actions_for(kinds)), cond))
    return out


@st.composite
def programs(draw: st.DrawFn, kinds_pool: list[Kind] | None = None) -> hv.Program:
    rules = draw(rules_lists(kinds_pool))
    try:
        return hv.compile(rules)
    except hv.InvalidRuleError as e:
        # Random conditions may exceed the limits, or ask sample(n) to span
        # several hypervisor rules; both are rejected by design.
        from hypothesis import assume
        assert isinstance(e, hv.LimitExceededError) or "separate counters" in str(e), e
        assume(False)
        raise


@st.composite
def events(draw: st.DrawFn, kinds: list[Kind], nr_vcpus: int = 2) -> RawEvent:
    kind = draw(st.sampled_from(kinds))
    f = [draw(small_values) for _ in Field]
    f[Field.VCPU] = draw(st.integers(0, nr_vcpus - 1))
    f[Field.CPL] = draw(st.sampled_from([0, 3]))
    return RawEvent(int(kind), tuple(f))


# ---------------------------------------------------------------------------
# Raw tables, valid or not, for comparing the two checkers.

_u8 = st.one_of(st.integers(0, 12), st.integers(0, 255))
_wide = st.one_of(st.sampled_from([0, 1, 0xFF, MASK64, 0x1000]), st.integers(0, MASK64))


@st.composite
def raw_conds(draw: st.DrawFn) -> RawCond:
    if draw(st.integers(0, 3)) == 0:
        return RawCond()
    mask = draw(_wide)
    value = draw(st.one_of(_wide, st.just(draw(_wide) & mask)))
    return RawCond(
        field=draw(st.one_of(st.integers(0, len(Field) - 1), _u8)),
        cmp=draw(st.one_of(st.integers(0, len(Cmp) - 1), _u8)),
        flags=draw(st.sampled_from([0, 0, 1, 2])),
        set_id=draw(st.sampled_from([0, 0, 1, 2, 9])),
        pad=draw(st.sampled_from([0, 0, 0, 1])),
        mask=mask, value=value,
        value2=draw(st.sampled_from([0, 0, value, MASK64, 5])))


@st.composite
def raw_rules(draw: st.DrawFn) -> RawRule:
    nr = draw(st.integers(0, LIMITS.max_conds + 1))
    conds = tuple(draw(raw_conds()) for _ in range(min(nr + draw(st.integers(0, 1)),
                                                       LIMITS.max_conds)))
    return RawRule(
        kinds=draw(st.one_of(st.sampled_from([k.bit for k in Kind] + [0, 1 << 20, 0x21]),
                             st.integers(0, (1 << 32) - 1))),
        action=draw(st.sampled_from([0, 1, 2, 3, 4, 9])),
        fallback=draw(st.sampled_from([0, 0, 1, 2])),
        nr_conds=nr,
        pad0=draw(st.sampled_from([0, 0, 0, 1])),
        sample=draw(st.sampled_from([0, 0, 1, 3])),
        pad1=draw(st.sampled_from([0, 0, 0, 7])),
        conds=conds)


@st.composite
def raw_sets(draw: st.DrawFn) -> RawSet:
    name = draw(st.sampled_from([b"t", b"target", b"", b"x" * 15, b"x" * 16, b"a\0b",
                                 b"ok\0\0"]))
    cap = draw(st.sampled_from([0, 1, 4, LIMITS.max_set_entries,
                                LIMITS.max_set_entries + 1]))
    return RawSet(name=name, mask=draw(st.sampled_from([0, MASK64, hv.PROCESS_MASK])),
                  capacity=cap, nr_init=draw(st.integers(0, 3)),
                  pad=draw(st.sampled_from([0, 0, 0, 1])))


@st.composite
def raw_tables(draw: st.DrawFn) -> RawTable:
    rules = tuple(draw(st.lists(raw_rules(), max_size=4)))
    sets = tuple(draw(st.lists(raw_sets(), max_size=3)))
    nkeys = sum(s.nr_init for s in sets) + draw(st.sampled_from([0, 0, 0, 1]))
    keys = tuple(draw(small_values) for _ in range(nkeys))
    return RawTable(rules, sets, keys)
