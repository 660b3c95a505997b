"""The sim backend as a user sees it: install, sets, breakpoints, subscriptions, demo."""

from __future__ import annotations

import itertools

import pytest

import hvfilter as hv
from hvfilter import NEW, OLD, Kind, on
from hvfilter.demo import process_bound_rules


def _wl(**kw: int) -> hv.GuestWorkload:
    base = {"nr_busy": 4, "quiet": 2, "calls": 4, "rounds": 30, "nr_vcpus": 1}
    base.update(kw)
    return hv.GuestWorkload(**base)  # type: ignore[arg-type]


def test_install_is_atomic_and_removed_on_exit(dom):
    prog = hv.compile([on(Kind.CPUID).then(hv.pass_)])
    ev = [hv.Cpuid(0, 1)]
    assert dom.feed(ev)[0].action == hv.ActionCode.FORWARD      # nothing installed
    with dom.install(prog) as inst:
        assert dom.info().nr_rules == 1
        assert dom.feed(ev)[0].action == hv.ActionCode.PASS
        inst.replace(hv.compile([on(Kind.CPUID).then(hv.sample(2)),
                                 on(Kind.CR3_WRITE).then(hv.pass_)]))
        assert dom.info().nr_rules == 2
    assert dom.info().nr_rules == 0
    assert dom.feed(ev)[0].action == hv.ActionCode.FORWARD


def test_install_removed_when_an_exception_leaves_the_block(dom):
    with pytest.raises(RuntimeError), dom.install(hv.compile([on(Kind.CPUID).then(hv.pass_)])):
        raise RuntimeError("tool crashed")
    assert dom.info().nr_rules == 0


def test_generation_and_rule_stats_restart(dom):
    with dom.install(hv.compile([on(Kind.CPUID).then(hv.pass_)])) as inst:
        g = dom.info().generation
        dom.feed([hv.Cpuid(0, 1)] * 3)
        assert inst.stats().rules[0].passed == 3
        inst.replace(hv.compile([on(Kind.CPUID).then(hv.pass_)]))
        assert dom.info().generation == g + 1
        dom.feed([hv.Cpuid(1, 1)])
        st = inst.stats()
        assert st.rules[0].passed == 1 and st.kinds[Kind.CPUID].seen == 4
    dom.reset_stats()
    assert dom.stats().total.seen == 0


def test_breakpoint_emulation_and_fallback(dom):
    prog = hv.compile([on(Kind.BREAKPOINT).then(hv.emulate)])
    mine = hv.Breakpoint(0, rip=0xFFFF_FFFF_8100_0010, gfn=0x1000, cr3=0x2000)
    guest_owned = hv.Breakpoint(0, rip=0xFFFF_FFFF_8100_0020, gfn=0x1000, cr3=0x2000)
    dom.add_breakpoint(mine.gpa, b"\x48\x89\xe5")
    with dom.install(prog):
        v = dom.feed([mine, guest_owned])
        st = dom.stats().kinds[Kind.BREAKPOINT]
    assert (v[0].action, v[0].insn) == (hv.ActionCode.EMULATE, b"\x48\x89\xe5")
    assert v[1].action == hv.ActionCode.PASS          # reinjected: not ours
    assert (st.emulated, st.passed, st.fallbacks) == (1, 1, 1)
    assert dom.info().nr_breakpoints == 1
    dom.remove_breakpoint(mine.gpa)
    assert dom.info().nr_breakpoints == 0


def test_workload_follows_the_lab_guests_schedule():
    # lab/guest/README.md: the target (process 0) runs before busy slice 0, M, 2M...
    wl = hv.GuestWorkload(nr_busy=3, gap=4, calls=1, rounds=3)
    writes = [e.fields[hv.Field.NEW_VALUE] for e in wl.iter_events()
              if e.kind == Kind.CR3_WRITE]
    assert writes[0] == wl.boot_cr3 == 0x1FC000
    first_writes = writes[1::3]
    procs = [(v - wl.cr3_base) // wl.cr3_stride for v in first_writes]
    assert procs == [0, 1, 2, 3, 1, 0, 2, 3, 1, 2, 0, 3]
    assert wl.root(0) == 0x200000 and wl.root(0, user=True) == 0x201000
    assert wl.target_slices == 3 == -(-9 // 4)
    kpti0 = hv.GuestWorkload(nr_busy=3, kpti=False, rounds=2)
    assert kpti0.cr3_writes == 1 + kpti0.slices == 1 + 6 + 2      # M = quiet * N = 3
    notarget = hv.GuestWorkload(target=False, rounds=2)
    assert notarget.target_slices == 0
    assert sum(1 for _ in notarget.iter_events()) == notarget.events


def test_workload_counts():
    wl = _wl()
    evs = list(wl.iter_events())
    assert len(evs) == wl.events
    assert sum(e.kind == Kind.CR3_WRITE for e in evs) == wl.cr3_writes
    k, u = wl.root(2), wl.root(2, user=True)
    assert u & ~(0xFFF | 1 << 12) == k & ~0xFFF          # KPTI: bit 12 (+PCID) only
    first = next(e for e in evs if e.kind == Kind.CR3_WRITE)
    assert first.fields[hv.Field.OLD_VALUE] == first.fields[hv.Field.CR3]


@pytest.mark.parametrize("vcpus", [1, 2, 3])
def test_process_bound_monitoring_forwards_exactly_the_target(vcpus):
    wl = _wl(nr_vcpus=vcpus)
    target = wl.process_set(0)
    prog = hv.compile(process_bound_rules(target))
    with hv.open("sim") as hyp:
        dom = hyp.create_domain(9, vcpus=vcpus)
        dom.add_breakpoint(wl.bp_gpa, b"\x55")
        with dom.install(prog):
            sub = dom.subscribe(hv.Cr3Switch, hv.Breakpoint, process=target)
            dom.play(wl)
            got = list(sub)
            st = dom.stats()
    # Oracle: replay the generated events and pick the target's by hand.
    mask = hv.PROCESS_MASK
    tk = wl.root(0) & mask
    want = []
    for e in wl.iter_events():
        f = e.fields
        if e.kind == Kind.CR3_WRITE:
            if ((f[hv.Field.NEW_VALUE] & mask) == tk) != ((f[hv.Field.OLD_VALUE] & mask) == tk):
                want.append(hv.events.from_raw(e, lambda v: (v & mask) == tk))
        elif (f[hv.Field.CR3] & mask) == tk:
            want.append(hv.events.from_raw(e))
    assert got == want
    assert st.conserved
    assert st.total.forwarded == len(want)
    if vcpus == 1:
        assert len(want) == wl.target_slices * (2 + wl.calls)
    switches = [e for e in got if isinstance(e, hv.Cr3Switch)]
    assert sum(e.entered is True for e in switches) == sum(e.entered is False for e in switches)
    assert st.kinds[Kind.BREAKPOINT].emulated == wl.breakpoints - wl.target_slices * wl.calls


def test_callbacks_and_their_exceptions(dom):
    prog = hv.compile([on(Kind.CPUID).when(hv.INDEX.eq(7)).then(hv.forward),
                       on(Kind.CPUID).then(hv.pass_)])
    seen: list[hv.Event] = []
    with dom.install(prog):
        sub = dom.subscribe(hv.Cpuid)

        @sub.on
        def cb(ev: hv.Event) -> None:
            seen.append(ev)
            if len(seen) == 2:
                raise KeyError("boom from the tool")

        dom.play([hv.Cpuid(0, 7), hv.Cpuid(0, 1), hv.Cpuid(1, 7), hv.Cpuid(0, 7),
                  hv.Cpuid(1, 7)])
        with pytest.raises(KeyError, match="boom from the tool"):
            dom.run()
        # Delivery resumes after the event whose callback raised.
        assert dom.run() == 2
        assert [e.vcpu for e in seen] == [0, 1, 0, 1]
        assert dom.stats().kinds[Kind.CPUID].seen == 5


def test_iterator_and_callback_subscriptions_together(dom):
    prog = hv.compile([on(Kind.CR3_WRITE, Kind.CPUID).then(hv.forward)])
    with dom.install(prog):
        it = dom.subscribe(hv.Cr3Switch)
        calls: list[hv.Event] = []
        cb = dom.subscribe(hv.Cpuid)
        cb.on(calls.append)
        dom.play([hv.Cr3Switch(0, 1, 2), hv.Cpuid(0, 3), hv.Cr3Switch(1, 2, 3)])
        assert [e.new for e in it] == [2, 3]      # type: ignore[union-attr]
        assert calls == [hv.Cpuid(0, 3)]
        it.close()
        assert list(it) == []


def test_entered_follows_live_set_updates(dom):
    target = hv.process("target", 0x4000)
    prog = hv.compile([on(Kind.CR3_WRITE).when(NEW.in_(target) ^ OLD.in_(target))
                       .then(hv.forward)])
    with dom.install(prog) as inst:
        sub = dom.subscribe(hv.Cr3Switch, process="target")
        inst.set("target").add(0x8000)          # the process forked a new address space
        dom.play([hv.Cr3Switch(0, 0x2000, 0x8000), hv.Cr3Switch(0, 0x8000, 0x6000)])
        assert [e.entered for e in sub] == [True, False]  # type: ignore[union-attr]


def test_demo_tells_a_conserved_story():
    from hvfilter import demo
    lines: list[str] = []
    wl = hv.GuestWorkload(nr_busy=5, quiet=2, calls=3, rounds=40)
    res = demo.main(lines.append, "sim", None, [], None, 0, wl, show=5)
    text = "\n".join(lines)
    assert res.backend == "sim" and res.stats.conserved
    assert res.delivered == res.stats.total.forwarded == wl.target_slices * (2 + wl.calls)
    assert res.stats.total.seen == wl.events
    assert "simulator" in text and "round trips avoided" in text and "OK" in text
    assert "MISMATCH" not in text and "VIOLATED" not in text


def test_cli_demo_runs(capsys):
    from hvfilter.cli import main
    assert main(["demo", "--rounds", "50", "--show", "3"]) == 0
    out = capsys.readouterr().out
    assert "Step 1" in out and "Step 3" in out and "conservation" in out


def test_bench_produces_numbers(tmp_path, capsys):
    from hvfilter import bench
    res = bench.main(print, tmp_path / "r.json", rounds=20)
    assert res["events"] == hv.GuestWorkload(nr_busy=8, quiet=4, calls=16, rounds=20).events
    assert all(v > 0 for v in res.values())
    assert (tmp_path / "r.json").exists()


def test_events_without_subscribers_are_still_counted(dom):
    with dom.install(hv.compile([on(Kind.CPUID).then(hv.forward)])):
        dom.play([hv.Cpuid(0, 1)] * 10)
        assert dom.run() == 0                     # nobody listening: nothing delivered
        assert dom.stats().kinds[Kind.CPUID].forwarded == 10


def test_demo_xen_path_runs_against_a_hypervisor_handle():
    # The Xen path only uses the control plane; a simulated domain stands in
    # for the lab's domain here (seconds=0: no waiting).
    from hvfilter import demo
    lines: list[str] = []
    with hv.open("sim") as hyp:
        hyp.create_domain(7)
        res = demo.run_xen(lines.append, hyp, 7, [0x200000], 0x101000, 0)
        assert hyp.domain(7).info().nr_rules == 0           # uninstalled again
        assert hyp.domain(7).info().nr_breakpoints == 0
    text = "\n".join(lines)
    assert "domain 7" in text and "Step 1" in text and "conservation" in text
    assert res.stats.conserved


def test_workload_cpuid_msr_and_second_function():
    wl = hv.GuestWorkload(nr_busy=2, calls=1, calls2=2, cpuid=3, msr=2, rounds=4)
    evs = list(wl.iter_events())
    assert len(evs) == wl.events
    kinds = [e.kind for e in evs]
    assert kinds.count(Kind.CPUID) == wl.cpuids == 3 * wl.slices
    msrs = [e for e in evs if e.kind == Kind.MSR_WRITE]
    assert len(msrs) == wl.msr_writes and all(e.fields[hv.Field.INDEX] == 0xC0000082 for e in msrs)
    assert all(a.fields[hv.Field.NEW_VALUE] == b.fields[hv.Field.OLD_VALUE]
               for a, b in itertools.pairwise(msrs))                # one vCPU: a chain
    assert len({e.fields[hv.Field.NEW_VALUE] for e in msrs}) == len(msrs)   # distinct values
    bps = {hv.events.from_raw(e).gpa for e in evs if e.kind == Kind.BREAKPOINT}  # type: ignore[union-attr]
    assert bps == {0x101000, 0x101800}
    # The lab's CPUID/MSR recipe: pass them all in Xen, nothing reaches dom0.
    prog = hv.compile([on(Kind.CPUID, Kind.MSR_WRITE).then(hv.pass_)])
    with hv.open("sim") as hyp:
        dom = hyp.create_domain(1)
        with dom.install(prog):
            dom.play(wl)
            dom.run()
            st = dom.stats()
    assert st.kinds[Kind.CPUID].passed == wl.cpuids
    assert st.kinds[Kind.MSR_WRITE].passed == wl.msr_writes
    assert st.conserved
