"""Unit tests of the rule language and compile(): encoding, dump, rejections.

Every rule that compile() rejects is also encoded without checks and given
to the hypervisor's own checker (hvf_table_check) and to the simulated
hypervisor: all three must agree on the errno and the place.
"""

from __future__ import annotations

import errno

import pytest

import hvfilter as hv
from hvfilter import CPL, CR3, INDEX, NEW, OLD, RIP, Kind, _binding, on
from hvfilter.abi import ALL_KINDS, MASK64, ActionCode, Cmp, Field

T = hv.process("target", 0x2000)


def test_language_values_are_immutable_and_composable():
    a, b = NEW.in_(T), OLD.in_(T)
    assert (a & b) == hv.AllOf((a, b))
    assert (a | b) == hv.AnyOf((a, b))
    assert ~~a == a
    assert (~(a & b)) == hv.AnyOf((~a, ~b))      # De Morgan, pushed to the tests
    assert str(a ^ b) == "(NEW in target & OLD not in target) | (NEW not in target & OLD in target)"
    with pytest.raises(AttributeError):
        a.negated = True  # type: ignore[misc]


def test_process_mask():
    assert hv.PROCESS_MASK == MASK64 & ~(0xFFF | 1 << 12 | 1 << 63)
    assert T.mask == hv.PROCESS_MASK
    assert hv.process("p", 1, 2, capacity=3).values == (1, 2)


def test_compile_encodes_first_match_order_and_expansion():
    prog = hv.compile([
        on(Kind.CR3_WRITE).when(NEW.in_(T) ^ OLD.in_(T)).then(hv.forward),
        on(Kind.CR3_WRITE).then(hv.pass_),
        on(Kind.BREAKPOINT).when(CR3.in_(T)).then(hv.forward),
        on(Kind.BREAKPOINT).then(hv.Emulate(hv.forward)),
        on(Kind.CPUID).when(hv.never).then(hv.pass_),
        on(Kind.CPUID).then(hv.sample(10)),
    ])
    t = prog.table
    assert prog.origin == (0, 0, 1, 2, 3, 5)        # ^ is two rules, never is none
    assert [r.action for r in t.rules] == [ActionCode.FORWARD, ActionCode.FORWARD,
                                           ActionCode.PASS, ActionCode.FORWARD,
                                           ActionCode.EMULATE, ActionCode.SAMPLE]
    assert t.rules[4].fallback == ActionCode.FORWARD and t.rules[5].sample == 10
    c0, c1 = t.rules[0].conds
    assert (c0.field, c0.cmp, c0.flags, c0.set_id, c0.mask) == (Field.NEW_VALUE, Cmp.IN_SET,
                                                                 0, 0, 0)
    assert (c1.field, c1.flags) == (Field.OLD_VALUE, hv.abi.COND_NEGATE)
    assert t.sets[0].name == b"target" and t.sets[0].mask == hv.PROCESS_MASK
    assert t.keys == (0x2000,)
    assert hv.compile(prog.rules) == prog             # deterministic


def test_dump_shows_what_is_installed():
    prog = hv.compile([
        on(Kind.MSR_WRITE).when(INDEX.eq(0xC0000082) & ~NEW.between(1, 9)).named("lstar")
        .then(hv.forward),
    ])
    d = prog.dump()
    assert "set" not in d.splitlines()[0]
    assert "(00) on MSR_WRITE -> forward    # rule 0 'lstar'" in d
    assert "INDEX     EQ       mask 0xffffffffffffffff == 0xc0000082" in d
    assert "!NEW_VALUE RANGE    mask 0xffffffffffffffff [0x1, 0x9]" in d
    assert "(01) no rule matched -> forward" in d
    raw = prog.dump(raw=True)
    assert len(raw) > len(d)


# ---------------------------------------------------------------------------
# Rejections: (rules, exception, errno, source rule, cond, words in the message)

S = hv.ValueSet("s", 0xFF00, (0x100,))
BAD = {
    "eq outside mask": ([on(Kind.CR3_WRITE).when(NEW.masked(0xFF).eq(0x100)).then(hv.forward)],
                        hv.InvalidRuleError, errno.EINVAL, 0, 0, "bits outside the mask"),
    "empty range": ([on(Kind.CR3_WRITE).when(CR3.eq(1) & RIP.between(5, 1)).then(hv.forward)],
                    hv.InvalidRuleError, errno.EINVAL, 0, 1, "empty range"),
    "field not of kind": ([on(Kind.CR3_WRITE).then(hv.pass_),
                           on(Kind.BREAKPOINT).when(NEW.eq(1)).then(hv.forward)],
                          hv.InvalidRuleError, errno.EINVAL, 1, 0,
                          "field NEW_VALUE does not exist for BREAKPOINT"),
    "operator not for field": ([on(Kind.CPUID).when(CPL.any_bits(3)).then(hv.forward)],
                               hv.InvalidRuleError, errno.EINVAL, 0, 0,
                               "operator ANY_BITS is not allowed on CPL"),
    "no bits": ([on(Kind.CPUID).when(RIP.any_bits(0)).then(hv.forward)],
                hv.InvalidRuleError, errno.EINVAL, 0, 0, "mask 0"),
    "masked set lookup": ([on(Kind.CR3_WRITE).when(NEW.masked(0xF000).in_(S)).then(hv.forward)],
                          hv.InvalidRuleError, errno.EINVAL, 0, 0, "set's own mask"),
    "emulate a CR3 write": ([on(Kind.CR3_WRITE, Kind.BREAKPOINT).then(hv.emulate)],
                            hv.InvalidRuleError, errno.EINVAL, 0, None,
                            "action emulate is not allowed for CR3_WRITE"),
    "pass mem_access": ([on(Kind.MEM_ACCESS).then(hv.pass_)],
                        hv.InvalidRuleError, errno.EINVAL, 0, None,
                        "action pass is not allowed for MEM_ACCESS"),
    "sample 0": ([on(Kind.CPUID).then(hv.sample(0))],
                 hv.InvalidRuleError, errno.EINVAL, 0, None, "sample(0)"),
    "too many conditions": ([on(Kind.CR3_WRITE).when(hv.AllOf(tuple(NEW.eq(i)
                                                                    for i in range(9))))
                             .then(hv.forward)],
                            hv.LimitExceededError, errno.E2BIG, 0, None, "MAX_CONDS"),
    "too many rules": ([on(Kind.CPUID).then(hv.pass_)] * 65,
                       hv.LimitExceededError, errno.E2BIG, None, None, "MAX_RULES"),
    "too many conditions in the table": (
        [on(Kind.CR3_WRITE).when(hv.AllOf(tuple(NEW.eq(i) for i in range(8))))
         .then(hv.forward)] * 9,
        hv.LimitExceededError, errno.E2BIG, 8, None, "MAX_TOTAL_CONDS"),
    "too many sets": ([on(Kind.CR3_WRITE).when(NEW.in_(hv.ValueSet(f"s{i}")))
                       .then(hv.forward) for i in range(9)],
                      hv.LimitExceededError, errno.E2BIG, None, None, "MAX_SETS"),
    "set capacity": ([on(Kind.CR3_WRITE).when(NEW.in_(hv.ValueSet("big", capacity=4097)))
                      .then(hv.forward)],
                     hv.LimitExceededError, errno.E2BIG, None, None, "MAX_SET_ENTRIES"),
    "set empty name": ([on(Kind.CR3_WRITE).when(NEW.in_(hv.ValueSet(""))).then(hv.forward)],
                       hv.InvalidRuleError, errno.EINVAL, None, None, "empty name"),
    "set long name": ([on(Kind.CR3_WRITE).when(NEW.in_(hv.ValueSet("x" * 16)))
                       .then(hv.forward)],
                      hv.InvalidRuleError, errno.EINVAL, None, None, "longer than 15"),
    "set mask 0": ([on(Kind.CR3_WRITE).when(NEW.in_(hv.ValueSet("z", 0))).then(hv.forward)],
                   hv.InvalidRuleError, errno.EINVAL, None, None, "mask 0"),
    "set over capacity": ([on(Kind.CR3_WRITE).when(NEW.in_(hv.ValueSet("c", values=(1, 2, 3),
                                                                        capacity=2)))
                           .then(hv.forward)],
                          hv.InvalidRuleError, errno.EINVAL, None, None, "exceed its capacity"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_rules_fail_in_compile_and_in_the_evaluator_alike(case):
    rules, exc, err, rule, cond, words = BAD[case]
    with pytest.raises(exc) as ei:
        hv.compile(rules)
    e = ei.value
    assert e.errno == err
    assert e.rule == rule
    assert e.cond == cond
    assert words in str(e)
    if rule is not None:
        assert f"rule {rule} (" in str(e)

    # The same table, unchecked, in the hypervisor's own checker...
    table = hv.encode_unchecked(rules)
    problem = hv.check_table(table)
    assert problem is not None and problem.errno == err
    assert _binding.table_check(table, ALL_KINDS) == (-err, problem.rule, problem.cond)
    # ... and installed into the simulated hypervisor.
    with hv.open("sim") as hyp:
        hyp.create_domain(1)
        with pytest.raises(hv.HvfilterError) as ei2:
            hyp._control().table_replace(1, table)
        assert ei2.value.errno == err
        assert isinstance(ei2.value, exc)


def test_unsupported_kind_is_rejected_for_the_target_cpu():
    rules = [on(Kind.CR3_WRITE).then(hv.pass_), on(Kind.SINGLESTEP).then(hv.pass_)]
    amd = [k for k in Kind if k not in (Kind.SINGLESTEP, Kind.MEM_ACCESS)]
    with pytest.raises(hv.UnsupportedRuleError) as ei:
        hv.compile(rules, supported_kinds=amd)
    assert ei.value.errno == errno.EOPNOTSUPP and ei.value.rule == 1
    assert "cannot raise SINGLESTEP" in str(ei.value)
    hv.compile(rules)     # fine for a CPU that has them
    with hv.open("sim", sim=hv.SimConfig(kinds=frozenset(amd))) as hyp:
        dom = hyp.create_domain(1)
        assert dom.info().kinds == frozenset(amd)
        with pytest.raises(hv.UnsupportedError):
            dom.install(hv.compile(rules))


def test_two_sets_with_one_name():
    a, b = hv.ValueSet("t", values=(1,)), hv.ValueSet("t", values=(2,))
    with pytest.raises(hv.InvalidRuleError, match="two different sets are named 't'"):
        hv.compile([on(Kind.CR3_WRITE).when(NEW.in_(a) | OLD.in_(b)).then(hv.forward)])


def test_unfinished_rule():
    with pytest.raises(hv.InvalidRuleError, match=r"finish it with \.then"):
        hv.compile([on(Kind.CR3_WRITE).when(NEW.eq(1))])  # type: ignore[list-item]


def test_values_must_be_64_bit():
    with pytest.raises(hv.InvalidRuleError, match="not a 64-bit"):
        hv.compile([on(Kind.CR3_WRITE).when(NEW.eq(1 << 64)).then(hv.forward)])


def test_sample_over_several_rules_is_rejected():
    with pytest.raises(hv.InvalidRuleError, match="separate counters") as ei:
        hv.compile([on(Kind.CPUID).then(hv.pass_),
                    on(Kind.CPUID).when(INDEX.eq(1) | INDEX.eq(2)).then(hv.sample(4))])
    assert ei.value.rule == 1
    hv.compile([on(Kind.CPUID).when(INDEX.between(1, 2)).then(hv.sample(4))])


def test_source_counts_add_up_expanded_rules():
    prog = hv.compile([on(Kind.CR3_WRITE).when(NEW.in_(T) ^ OLD.in_(T)).then(hv.forward),
                       on(Kind.CR3_WRITE).then(hv.pass_)])
    with hv.open("sim") as hyp:
        dom = hyp.create_domain(1)
        with dom.install(prog):
            dom.feed([hv.Cr3Switch(0, 0x4000, 0x2000), hv.Cr3Switch(0, 0x2000, 0x4000),
                      hv.Cr3Switch(0, 0x4000, 0x6000)])
            st = dom.stats()
    assert [c.seen for c in st.rules] == [1, 1, 1]
    assert [(c.seen, c.forwarded, c.passed) for c in prog.source_counts(st)] == [(2, 2, 0),
                                                                                (1, 0, 1)]


def test_exploding_condition_fails_fast():
    # Expanding this fully would take 2**15 conjunctions; the compiler stops at
    # MAX_RULES + 1.
    cond = NEW.eq(0)
    for i in range(1, 16):                  # 2**15 conjunctions if expanded
        cond = cond ^ NEW.eq(i)
    with pytest.raises(hv.LimitExceededError, match="expands to more than") as ei:
        hv.compile([on(Kind.CR3_WRITE).when(cond).then(hv.forward)])
    assert ei.value.errno == errno.E2BIG and ei.value.rule == 0
