"""Property tests: the simulator (the hypervisor's evaluator) against the spec.

Random rules and events drive the sim backend; a plain reading of the
header's semantics (``reference.py``) says what must happen.
"""

from __future__ import annotations

import errno

from hypothesis import assume, given
from hypothesis import strategies as st

import hvfilter as hv
from hvfilter import _binding
from hvfilter._raw import RawEvent
from hvfilter.abi import ALL_KINDS, Field, Kind
from reference import RefDomain
from strategies import MASK64, events, programs, raw_tables, rules_lists, small_values

KINDS = [Kind.CR3_WRITE, Kind.BREAKPOINT, Kind.MSR_WRITE, Kind.CPUID]


def _fresh_domain(nr_vcpus: int = 2) -> tuple[hv.Hypervisor, hv.Domain]:
    hyp = hv.open("sim")
    return hyp, hyp.create_domain(3, vcpus=nr_vcpus)


@given(raw_tables(), st.sampled_from([ALL_KINDS, ALL_KINDS & ~(1 << Kind.SINGLESTEP),
                                      Kind.CR3_WRITE.bit | Kind.BREAKPOINT.bit]))
def test_python_checker_agrees_with_hvf_table_check(table, supported):
    problem = hv.check_table(table, supported)
    rc, bad_rule, bad_cond = _binding.table_check(table, supported)
    if problem is None:
        assert rc == 0
    else:
        assert (-rc, bad_rule, bad_cond) == (problem.errno, problem.rule, problem.cond), \
            problem.message


@given(st.data(), programs(KINDS))
def test_first_match_and_statistics(data, prog):
    evs = data.draw(st.lists(events(KINDS), min_size=1, max_size=60))
    hyp, dom = _fresh_domain()
    with hyp:
        ref = RefDomain.of(prog)
        # Some breakpoints registered at addresses the events use.
        gpas = {((e.fields[Field.GFN] << 12) | (e.fields[Field.GLA] & 0xFFF)) & MASK64
                for e in evs if e.kind == Kind.BREAKPOINT}
        for gpa in sorted(gpas):
            if data.draw(st.booleans()):
                dom.add_breakpoint(gpa, b"\x90")
                ref.breakpoints[gpa] = b"\x90"
        with dom.install(prog):
            verdicts = dom.feed(evs)
            for ev, v in zip(evs, verdicts, strict=True):
                action, rule = ref.decide(ev)
                assert (v.action, -1 if v.rule is None else v.rule) == (action, rule), ev
            st_ = dom.stats()
        assert st_.conserved
        for k in KINDS:
            assert st_.kinds[k].seen == sum(1 for e in evs if e.kind == k)
        assert st_.total.forwarded == sum(1 for v in verdicts if v.action == hv.ActionCode.FORWARD)


@given(st.data(), programs(KINDS))
def test_negation_complements(data, prog):
    """A rule with ~C forwards exactly the events a rule with C passes."""
    kind = Kind.CR3_WRITE
    src = [r for r in prog.rules if r.kinds == frozenset({kind}) and r.when != hv.always]
    cond = src[0].when if src else hv.NEW.eq(0x2000)
    try:
        a = hv.compile([hv.on(kind).when(cond).then(hv.forward), hv.on(kind).then(hv.pass_)])
        b = hv.compile([hv.on(kind).when(~cond).then(hv.forward), hv.on(kind).then(hv.pass_)])
    except hv.LimitExceededError:
        assume(False)  # ~ of a large disjunction can exceed the table's limits
        raise
    evs = data.draw(st.lists(events([kind]), min_size=1, max_size=40))
    hyp, dom = _fresh_domain()
    with hyp:
        with dom.install(a):
            va = dom.feed(evs)
        with dom.install(b):
            vb = dom.feed(evs)
    for x, y in zip(va, vb, strict=True):
        assert (x.action == hv.ActionCode.FORWARD) != (y.action == hv.ActionCode.FORWARD)


@given(st.data(), rules_lists([Kind.MSR_WRITE], max_rules=2))
def test_or_compiles_to_equivalent_rules(data, rules):
    """on(k).when(A | B) forwards what on(k).when(A) or on(k).when(B) forwards."""
    k = Kind.MSR_WRITE
    a, b = (rules + rules)[0].when, (rules + rules)[1].when
    evs = data.draw(st.lists(events([k]), min_size=1, max_size=40))

    def forwarded(c: hv.Cond) -> list[bool]:
        try:
            prog = hv.compile([hv.on(k).when(c).then(hv.forward), hv.on(k).then(hv.pass_)])
        except hv.LimitExceededError:
            assume(False)  # the DNF of a random XOR can exceed the table's limits
            raise
        hyp, dom = _fresh_domain()
        with hyp, dom.install(prog):
            return [v.action == hv.ActionCode.FORWARD for v in dom.feed(evs)]

    fa, fb, fab = forwarded(a), forwarded(b), forwarded(a | b)
    assert fab == [x or y for x, y in zip(fa, fb, strict=True)]
    fx = forwarded(a ^ b)
    assert fx == [x != y for x, y in zip(fa, fb, strict=True)]


@given(st.integers(0, MASK64), st.integers(1, MASK64), st.integers(0, MASK64))
def test_set_masks(key, mask, noise):
    """A value is in a set iff it equals a key on the mask's bits."""
    s = hv.ValueSet("s", mask, (key,))
    prog = hv.compile([hv.on(Kind.CR3_WRITE).when(hv.NEW.in_(s)).then(hv.forward),
                       hv.on(Kind.CR3_WRITE).then(hv.pass_)])
    same = (key & mask) | (noise & ~mask & MASK64)
    other = same ^ (1 << (mask.bit_length() - 1))   # flips a bit inside the mask
    evs = [hv.Cr3Switch(0, 0, same), hv.Cr3Switch(0, 0, other)]
    hyp, dom = _fresh_domain()
    with hyp, dom.install(prog):
        v = dom.feed(evs)
    assert v[0].action == hv.ActionCode.FORWARD
    assert v[1].action == hv.ActionCode.PASS


def test_process_mask_covers_pcid_kpti_and_noflush():
    wl = hv.GuestWorkload(pcid=True)
    k, u = wl.root(2), wl.root(2, user=True)
    s = hv.process("p", k)
    prog = hv.compile([hv.on(Kind.CR3_WRITE).when(hv.NEW.in_(s)).then(hv.forward),
                       hv.on(Kind.CR3_WRITE).then(hv.pass_)])
    hyp, dom = _fresh_domain()
    with hyp, dom.install(prog):
        v = dom.feed([hv.Cr3Switch(0, 0, x)
                      for x in (k, u, k | hv.NOFLUSH_BIT, (k & ~0xFFF) | 0x7FF, wl.root(1))])
    assert [x.action for x in v] == [hv.ActionCode.FORWARD] * 4 + [hv.ActionCode.PASS]


@given(st.integers(1, 7), st.lists(st.integers(0, 40), min_size=1, max_size=3))
def test_sampling_per_vcpu(n, per_vcpu):
    prog = hv.compile([hv.on(Kind.CPUID).then(hv.sample(n))])
    evs = [hv.Cpuid(vcpu, 0x1) for vcpu, m in enumerate(per_vcpu) for _ in range(m)]
    hyp, dom = _fresh_domain(nr_vcpus=len(per_vcpu))
    with hyp, dom.install(prog):
        v = dom.feed(evs)
        st_ = dom.stats()
    expected = sum((m + n - 1) // n for m in per_vcpu)
    assert sum(x.action == hv.ActionCode.FORWARD for x in v) == expected
    c = st_.kinds[Kind.CPUID]
    assert (c.seen, c.forwarded, c.sampled_out, c.passed) == (len(evs), expected,
                                                              len(evs) - expected, 0)
    assert st_.conserved


@given(st.data())
def test_set_updates_while_installed(data):
    keys = data.draw(st.lists(small_values, min_size=1, max_size=5, unique=True))
    s = hv.ValueSet("live", capacity=16)
    prog = hv.compile([hv.on(Kind.MSR_WRITE).when(hv.INDEX.in_(s)).then(hv.forward),
                       hv.on(Kind.MSR_WRITE).then(hv.pass_)])
    hyp, dom = _fresh_domain()
    with hyp, dom.install(prog) as inst:
        live = inst.set("live")
        ref: set[int] = set()
        for _ in range(6):
            k = data.draw(st.sampled_from(keys))
            if k in ref:
                live.remove(k)
                ref.discard(k)
            else:
                live.add(k)
                ref.add(k)
            v = dom.feed([hv.MsrWrite(0, x, 0, 0) for x in keys])
            assert [x.action == hv.ActionCode.FORWARD for x in v] == [x in ref for x in keys]


def test_errno_of_invalid_table_in_evaluator_and_checker_agree_on_examples():
    # Hypothesis rarely builds a table over MAX_TOTAL_CONDS; build one.
    per = hv.LIMITS.max_conds
    rules = [hv.on(Kind.CR3_WRITE).when(hv.AllOf(tuple(hv.NEW.eq(i) for i in range(per))))
             .then(hv.forward)
             for _ in range(hv.LIMITS.max_total_conds // per + 1)]
    table = hv.encode_unchecked(rules)
    p = hv.check_table(table)
    assert p is not None and p.errno == errno.E2BIG
    assert _binding.table_check(table, ALL_KINDS) == (-p.errno, p.rule, p.cond)


def test_raw_event_roundtrip():
    ev = hv.Breakpoint(vcpu=1, rip=0xFFFF_FFFF_8100_0123, gfn=0x1234, cr3=0x5000)
    raw = hv.events.to_raw(ev)
    assert isinstance(raw, RawEvent)
    assert hv.events.from_raw(raw) == ev
    assert ev.gpa == 0x1234123


@given(st.integers(1, 5), st.integers(1, 7), st.integers(0, 3), st.booleans(),
       st.integers(1, 3), st.booleans(), st.integers(1, 6))
def test_process_bound_monitoring_on_random_guests(nr_busy, gap, calls, kpti, vcpus, pcid,
                                                   rounds):
    from hvfilter.demo import process_bound_rules
    wl = hv.GuestWorkload(nr_busy=nr_busy, gap=gap, calls=calls, kpti=kpti, nr_vcpus=vcpus,
                          pcid=pcid, rounds=rounds)
    target = wl.process_set(0)
    mask, tk = target.mask, target.values[0] & target.mask
    hyp, dom = _fresh_domain(nr_vcpus=vcpus)
    with hyp:
        dom.add_breakpoint(wl.bp_gpa, b"\x55")
        with dom.install(hv.compile(process_bound_rules(target))):
            got: list[RawEvent] = []
            dom.play(wl)
            while not dom.source.exhausted:
                dom.source.listen(None, lambda e: got.append(e) or False)  # type: ignore[func-returns-value]
            st_ = dom.stats()
    want = []
    for e in wl.iter_events():
        f = e.fields
        if e.kind == Kind.CR3_WRITE:
            if ((f[Field.NEW_VALUE] & mask) == tk) != ((f[Field.OLD_VALUE] & mask) == tk):
                want.append(e)
        elif (f[Field.CR3] & mask) == tk:
            want.append(e)
    assert got == want
    assert st_.conserved and st_.total.seen == wl.events
    assert st_.kinds[Kind.BREAKPOINT].emulated == wl.breakpoints - wl.target_slices * calls
