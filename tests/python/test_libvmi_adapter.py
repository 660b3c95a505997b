"""The LibVMI adapter's bookkeeping, against a fake ``libvmi`` module.

The fake is not Xen and does not pretend to be: it records what the adapter
asks LibVMI to do (registrations, memory writes, pauses) and calls the
registered callbacks with events the test makes up.  The rule table and the
breakpoint registry are those of the simulator backend.  What the
hypervisor really does with the answers is proven in the lab scenarios
(hvfilter_monitor, hvfilter_bench_smoke).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

import hvfilter as hv
from hvfilter import Kind
from hvfilter.libvmi_adapter import Monitor, ProcessScope, Response, process_bound_rules

T = 0x200000            # the target's kernel root; user root T | 0x1000
OTHER = 0x202000
GPA = 0x101000
INSN = bytes.fromhex("488d84fe95e9d15b")


class _Regs:
    def __init__(self, cr3: int, rip: int) -> None:
        self.cr3, self.rip, self.cs_arbytes = cr3, rip, 0


class _Ev:
    def __init__(self, callback: Any) -> None:
        self.callback = callback
        self.vcpu_id = 0
        self.reinject = -1


def _fake_libvmi() -> types.ModuleType:
    m = types.ModuleType("libvmi")
    ev = types.ModuleType("libvmi.event")

    class RegEvent(_Ev):
        def __init__(self, reg: Any, access: Any, callback: Any) -> None:
            super().__init__(callback)
            self.value = self.previous = 0

    class IntEvent(_Ev):
        gla = gfn = offset = 0

    ev.RegEvent = RegEvent  # type: ignore[attr-defined]
    ev.IntEvent = IntEvent  # type: ignore[attr-defined]
    ev.RegAccess = types.SimpleNamespace(W="W")  # type: ignore[attr-defined]
    ev.EventResponse = types.SimpleNamespace(EMULATE="EMULATE")  # type: ignore[attr-defined]
    m.event = ev  # type: ignore[attr-defined]
    m.X86Reg = types.SimpleNamespace(CR3="CR3")  # type: ignore[attr-defined]
    return m


class FakeVmi:
    """Records calls; ``listen`` runs the callbacks for queued made-up events."""

    def __init__(self) -> None:
        self.mem = bytearray(0x200000)
        self.mem[GPA:GPA + len(INSN)] = INSN
        self.registered: list[Any] = []
        self.queue: list[tuple[str, dict[str, int]]] = []
        self.answers: list[tuple[Any, int]] = []
        self.paused = 0

    def register_event(self, e: Any) -> None:
        self.registered.append(e)

    def clear_event(self, e: Any) -> None:
        self.registered.remove(e)

    def read_pa(self, gpa: int, n: int) -> tuple[bytes, int]:
        return bytes(self.mem[gpa:gpa + n]), n

    def write_8_pa(self, gpa: int, v: int) -> None:
        self.mem[gpa] = v

    def write_pa(self, gpa: int, b: bytes) -> None:
        self.mem[gpa:gpa + len(b)] = b

    def pause_vm(self) -> None:
        self.paused += 1

    def resume_vm(self) -> None:
        self.paused -= 1

    def are_events_pending(self) -> int:
        return len(self.queue)

    def listen(self, ms: int) -> None:
        while self.queue:
            kind, f = self.queue.pop(0)
            e = next(x for x in self.registered
                     if type(x).__name__ == ("RegEvent" if kind == "cr3" else "IntEvent"))
            e.reinject = -1
            if kind == "cr3":
                e.previous, e.value = f["old"], f["new"]
                e.x86_regs = _Regs(f["old"], 0xFFFF)
            else:
                e.gfn, e.offset, e.gla = f["gpa"] >> 12, f["gpa"] & 0xFFF, f["gpa"]
                e.x86_regs = _Regs(f["cr3"], 0xFFFFFFFF80000000 + f["gpa"])
            self.answers.append((e.callback(self, e), e.reinject))

    def destroy(self) -> None:
        pass


@pytest.fixture
def vmi(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVmi]:
    m = _fake_libvmi()
    monkeypatch.setitem(sys.modules, "libvmi", m)
    monkeypatch.setitem(sys.modules, "libvmi.event", m.event)
    yield FakeVmi()


def test_watch_installs_rules_and_registers_events_together(dom: hv.Domain, vmi: FakeVmi) -> None:
    scope = ProcessScope("target", T)
    with Monitor(dom, vmi) as mon:
        mon.watch(scope, hv.Cr3Switch)
        assert dom.info().nr_rules == len(hv.compile(process_bound_rules(
            scope, frozenset({Kind.CR3_WRITE}))).table.rules)
        assert [type(e).__name__ for e in vmi.registered] == ["RegEvent"]
    assert vmi.registered == [] and dom.info().nr_rules == 0 and vmi.paused == 0


def test_plant_writes_int3_and_close_restores_every_byte(dom: hv.Domain, vmi: FakeVmi) -> None:
    with Monitor(dom, vmi) as mon:
        mon.plant(GPA, length=len(INSN))
        assert vmi.mem[GPA] == 0xCC and dom.info().nr_breakpoints == 1
        with pytest.raises(hv.InvalidArgumentError):
            mon.plant(GPA, length=1)                 # an int3 is there already
    assert bytes(vmi.mem[GPA:GPA + len(INSN)]) == INSN
    assert dom.info().nr_breakpoints == 0


def test_plant_checks_given_bytes_against_memory(dom: hv.Domain, vmi: FakeVmi) -> None:
    with Monitor(dom, vmi) as mon, pytest.raises(hv.InvalidArgumentError, match="memory holds"):
        mon.plant(GPA, insn=b"\x90")
    assert vmi.mem[GPA] == INSN[0]


def test_remove_restores_one_breakpoint(dom: hv.Domain, vmi: FakeVmi) -> None:
    with Monitor(dom, vmi) as mon:
        bp = mon.plant(GPA, insn=INSN)
        bp.remove()
        assert vmi.mem[GPA] == INSN[0] and not mon.planted and dom.info().nr_breakpoints == 0


def test_typed_events_and_responses(dom: hv.Domain, vmi: FakeVmi) -> None:
    got: list[hv.Event] = []
    with Monitor(dom, vmi, filter_in="dom0") as mon:
        mon.plant(GPA, insn=INSN)
        sub = mon.watch(ProcessScope("target", T), hv.Cr3Switch, hv.Breakpoint)

        @sub.on
        def cb(ev: hv.Event) -> Response | None:
            got.append(ev)
            return Response.REINJECT if isinstance(ev, hv.Breakpoint) and len(got) > 2 else None

        vmi.queue += [("cr3", {"old": OTHER, "new": T}),           # in: delivered
                      ("cr3", {"old": T, "new": T | 0x1000}),       # KPTI flip: filtered
                      ("bp", {"gpa": GPA, "cr3": T}),               # target: default EMULATE
                      ("bp", {"gpa": GPA, "cr3": OTHER}),           # foreign: EMULATE, undelivered
                      ("bp", {"gpa": GPA, "cr3": T | 0x1000})]      # callback says REINJECT
        assert mon.listen(0.01) == 3
    assert [type(e).__name__ for e in got] == ["Cr3Switch", "Breakpoint", "Breakpoint"]
    assert got[0] == hv.Cr3Switch(vcpu=0, old=OTHER, new=T, entered=True, rip=0xFFFF)
    assert isinstance(got[1], hv.Breakpoint) and got[1].gpa == GPA and got[1].cr3 == T
    assert [a for a, _ in vmi.answers] == [None, None, "EMULATE", "EMULATE", None]
    assert [r for _, r in vmi.answers][2:] == [0, 0, 1]
    assert mon.stats == {"received": 5, "delivered": 3}


def test_callback_exception_reaches_the_caller_and_the_guest_goes_on(
        dom: hv.Domain, vmi: FakeVmi) -> None:
    class Boom(Exception):
        pass

    calls = 0
    with pytest.raises(Boom), Monitor(dom, vmi, filter_in="dom0") as mon:
        mon.plant(GPA, insn=INSN)
        sub = mon.watch(ProcessScope("target", T), hv.Breakpoint)

        @sub.on
        def cb(ev: hv.Event) -> None:
            nonlocal calls
            calls += 1
            raise Boom

        vmi.queue += [("bp", {"gpa": GPA, "cr3": T}), ("bp", {"gpa": GPA, "cr3": T})]
        mon.listen(0.01)
    # Both hits were answered (EMULATE, the planted default); the second was
    # not delivered after the first callback raised; everything was undone.
    assert calls == 1
    assert [a for a, _ in vmi.answers] == ["EMULATE", "EMULATE"]
    assert vmi.mem[GPA] == INSN[0] and vmi.registered == [] and dom.info().nr_breakpoints == 0


def test_scope_follows_processes_in_the_installed_set(dom: hv.Domain, vmi: FakeVmi) -> None:
    roots = {T}
    scope = ProcessScope.following("target", lambda: set(roots))
    with Monitor(dom, vmi) as mon:
        mon.watch(scope, hv.Cr3Switch)
        inst = dom.installation
        assert inst is not None and T in inst.set("target")
        roots.add(OTHER | 0x1000)          # a new process (seen through its user root)
        roots.discard(T)                   # the old one exited
        added, removed = scope.refresh()
        assert added == {OTHER} and removed == {T}
        assert OTHER in inst.set("target") and T not in inst.set("target")
        assert OTHER | 0x5 in scope and T not in scope


def test_scope_as_a_condition_in_any_rule() -> None:
    scope = ProcessScope("target", T, T | 0x1000)
    prog = hv.compile([hv.on(Kind.CPUID).when(scope.running).then(hv.forward),
                       hv.on(Kind.CR3_WRITE).when(scope.switch).then(hv.forward)])
    assert len(scope) == 1 and prog.sets[0].name == "target"


def test_pid_scope_includes_the_kpti_user_root() -> None:
    class Os:
        def pid_to_dtb(self, pid: int) -> int:
            if pid == 7:
                return 0x5000_0000
            raise RuntimeError("no such pid")

    scope = ProcessScope.from_pid(Os(), 7, 8)
    assert scope.roots == (0x5000_0000,) and (0x5000_1000 in scope)


def test_one_watch_per_monitor(dom: hv.Domain, vmi: FakeVmi) -> None:
    with Monitor(dom, vmi) as mon:
        mon.watch(ProcessScope("target", T), hv.Cr3Switch)
        with pytest.raises(hv.StateError):
            mon.watch(ProcessScope("other", OTHER), hv.Cr3Switch)


def test_spin_listen_serves_what_is_pending_and_times_out(dom: hv.Domain, vmi: FakeVmi) -> None:
    with Monitor(dom, vmi, filter_in="dom0", poll="spin") as mon:
        sub = mon.watch(ProcessScope("target", T), hv.Cr3Switch)
        assert mon.listen(0.001) == 0                    # nothing pending: returns at the deadline
        vmi.queue.append(("cr3", {"old": OTHER, "new": T}))
        assert mon.listen(0.01) == 1
        assert next(iter(sub)) == hv.Cr3Switch(vcpu=0, old=OTHER, new=T, entered=True, rip=0xFFFF)


def test_monitor_rejects_a_bad_filter_place(dom: hv.Domain, vmi: FakeVmi) -> None:
    with pytest.raises(hv.InvalidArgumentError):
        Monitor(dom, vmi, filter_in="both")  # type: ignore[arg-type]
