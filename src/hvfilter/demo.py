"""``hvfilter demo``: process-bound monitoring of one process among many.

On a patched Xen dom0 it installs the rules into the domain given and reads
the hypervisor's statistics while the guest runs.  Elsewhere it runs the
same rules on the simulator, over a generated workload that models the lab's
test guest, and says so.  Either way it prints the compiled rules, the
target's events as they reach the monitoring tool, and a statistics table.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from hvfilter.abi import Kind
from hvfilter.compiler import Program, compile
from hvfilter.errors import HvfilterError, NotOnXenError
from hvfilter.events import Breakpoint, Cr3Switch, Event
from hvfilter.hypervisor import Hypervisor, open
from hvfilter.rules import CR3, NEW, OLD, Rule, ValueSet, emulate, forward, on, pass_, process
from hvfilter.stats import Stats
from hvfilter.workload import GuestWorkload

Print = Callable[[str], None]

#: The instruction our breakpoint replaced (``push rbp``), for emulation.
ORIGINAL_INSN = b"\x55"


def process_bound_rules(target: ValueSet) -> list[Rule]:
    """The rules of process-bound monitoring of the processes in ``target``.

    * CR3 writes where exactly one side is in the target are forwarded
      (the target is scheduled in or out); all other CR3 writes, including
      the target's own KPTI user/kernel flips, are passed inside Xen.
    * Breakpoint hits inside the target are forwarded; all other hits are
      emulated inside Xen (or reinjected, if we did not plant them).
    """
    return [
        on(Kind.CR3_WRITE).when(NEW.in_(target) ^ OLD.in_(target))
        .named("target in/out").then(forward),
        on(Kind.CR3_WRITE).named("other CR3 writes").then(pass_),
        on(Kind.BREAKPOINT).when(CR3.in_(target)).named("target breakpoint").then(forward),
        on(Kind.BREAKPOINT).named("other breakpoints").then(emulate),
    ]


@attrs.frozen
class DemoResult:
    """What the demo measured (the tests check it)."""

    backend: str
    program: Program
    stats: Stats
    delivered: int
    target_events: int
    seconds: float


def describe(ev: Event, target_name: str) -> str:
    """One line for a forwarded event, for readers new to VMI."""
    if isinstance(ev, Cr3Switch):
        if ev.entered:
            what = f"{target_name} is scheduled IN "
        elif ev.entered is False:
            what = f"{target_name} is scheduled OUT"
        else:
            what = "CR3 write"
        return f"vCPU {ev.vcpu}: {what}  (CR3 {ev.old:#x} -> {ev.new:#x})"
    if isinstance(ev, Breakpoint):
        return (f"vCPU {ev.vcpu}: {target_name} called the watched kernel function "
                f"(breakpoint at {ev.rip:#x}, CR3 {ev.cr3:#x})")
    return f"vCPU {ev.vcpu}: {ev}"


def _summary(out: Print, st: Stats, seconds: float, backend: str) -> None:
    out("")
    out("Step 3: the hypervisor's statistics (every event is counted once):")
    out("")
    for line in st.table().splitlines():
        out("  " + line)
    out("")
    t = st.total
    ok = st.conserved
    out(f"  conservation: seen = forwarded + passed + emulated + sampled out, "
        f"for every kind and rule: {'OK' if ok else 'VIOLATED'}")
    if t.seen:
        pct = 100.0 * t.round_trips_avoided / t.seen
        out("")
        out(f"Result: {t.round_trips_avoided:,} of {t.seen:,} events ({pct:.2f}%) were decided "
            f"inside the hypervisor;")
        out(f"        only {t.forwarded:,} reached the monitoring tool in dom0.  Without the "
            f"filter, all {t.seen:,}")
        out(f"        would have paused the guest for a round trip to dom0: "
            f"{t.round_trips_avoided:,} round trips avoided.")
        if backend == "sim":
            rate = t.seen / seconds if seconds > 0 else 0.0
            out(f"        (The simulator evaluated {t.seen:,} events in {seconds:.2f} s, "
                f"{rate / 1e6:.1f} M events/s;")
            out("         that is the speed of this process, not of the hypervisor.)")


def run_sim(out: Print, wl: GuestWorkload, show: int, hyp: Hypervisor,
            reason: str | None) -> DemoResult:
    """The demo on the simulator, over the generated workload ``wl``."""
    out("Where: " + (f"{reason}." if reason else "simulator requested."))
    out("       Running on hvfilter's simulator instead: the very filter code that runs")
    out("       inside Xen, fed with a generated workload that models the lab's test guest.")
    out("")
    target = wl.process_set(0, "target")
    share = 100.0 / (wl.m + 1)
    out(f"The guest: {wl.nr_busy} busy processes and one process we want to watch, the")
    out(f"  *target*, take turns on {wl.nr_vcpus} virtual CPU(s); the target gets one turn "
        f"for every {wl.m} turns")
    out(f"  of the others ({share:.1f}% of the time).  Every turn starts with a write of CR3, "
        f"the CPU's")
    out("  page-table register: that is a context switch." + (
        "  With Linux KPTI each turn writes CR3" if wl.kpti else ""))
    if wl.kpti:
        out("  twice more (to the user page tables and back, for a system call).")
    out(f"  Each turn then calls a kernel function {wl.calls} times; the monitoring tool "
        f"planted a")
    out("  breakpoint (int3) on it, to see who calls it.")
    out(f"  The target's page tables: CR3 {wl.root(0):#x} (kernel) and {wl.root(0, True):#x}"
        f" (user).")
    out(f"  {wl.rounds:,} rounds make {wl.events:,} events "
        f"({wl.cr3_writes:,} CR3 writes, {wl.breakpoints:,} breakpoint hits).")
    out("  Without a filter, every one of them pauses the guest and waits for the tool in dom0,")
    out("  which then throws almost all of them away.")
    out("")
    prog = compile(process_bound_rules(target))
    _print_rules(out, prog)

    dom = hyp.create_domain(1, vcpus=wl.nr_vcpus)
    dom.add_breakpoint(wl.bp_gpa, ORIGINAL_INSN)
    out("")
    out(f"Step 2: install the rules into (simulated) domain {dom.domid}, run the guest, "
        f"and show")
    out("        the events that reach the monitoring tool:")
    out("")
    shown = 0
    target_events = 0
    with dom.install(prog):
        sub = dom.subscribe(Cr3Switch, Breakpoint, process=target)

        @sub.on
        def _show(ev: Event) -> None:
            nonlocal shown, target_events
            target_events += 1
            if shown < show:
                out("  " + describe(ev, "target"))
                shown += 1

        dom.play(wl)
        t0 = time.perf_counter()
        delivered = dom.run()
        seconds = time.perf_counter() - t0
        if target_events > shown:
            out(f"  ... and {target_events - shown:,} more events of the target "
                f"(use --show N to see more)")
        st = dom.stats()
    _summary(out, st, seconds, "sim")
    expected = wl.target_slices * (2 + wl.calls)
    out(f"        dom0 received exactly the target's {expected:,} events "
        f"({wl.target_slices:,} turns x (in + out + {wl.calls} calls))"
        f"{'' if wl.nr_vcpus == 1 else ' per vCPU switch'}: "
        f"{'OK' if delivered == expected else 'MISMATCH'}")
    return DemoResult("sim", prog, st, delivered, target_events, seconds)


def _print_rules(out: Print, prog: Program) -> None:
    out("Step 1: the filter rules, compiled exactly as the hypervisor will hold them")
    out("        (the first matching rule decides; '!' negates a condition):")
    out("")
    for line in prog.dump().splitlines():
        out("  " + line)


def run_xen(out: Print, hyp: Hypervisor, domid: int, cr3: list[int], bp_gpa: int | None,
            seconds: float) -> DemoResult:
    """The demo on a patched Xen: real domain, real hypervisor statistics."""
    dom = hyp.domain(domid)
    info = dom.info()
    out(f"Where: Xen, domain {domid}; hvfilter ABI {info.abi_version:#x}, "
        f"CPU supports {', '.join(k.name for k in sorted(info.kinds))}.")
    out("")
    target = process("target", *cr3)
    prog = compile(process_bound_rules(target), supported_kinds=info.kinds)
    _print_rules(out, prog)
    if bp_gpa is not None:
        dom.add_breakpoint(bp_gpa, ORIGINAL_INSN)
    out("")
    out(f"Step 2: rules installed into domain {domid}; the guest runs for {seconds:g} s.")
    out("        (Events reach dom0 through LibVMI's monitor ring; statistics come from Xen.)")
    t0 = time.monotonic()
    with dom.install(prog) as inst:
        dom.reset_stats()
        deadline = t0 + seconds
        while (now := time.monotonic()) < deadline:
            time.sleep(min(1.0, deadline - now))   # pacing the progress line, not a sync
            t = inst.stats().total
            out(f"  {now - t0:5.1f} s: {t.seen:,} events seen, {t.forwarded:,} forwarded to dom0")
        st = inst.stats()
    if bp_gpa is not None:
        dom.remove_breakpoint(bp_gpa)
    _summary(out, st, time.monotonic() - t0, "xen")
    return DemoResult("xen", prog, st, 0, st.total.forwarded, time.monotonic() - t0)


def main(out: Print, backend: str, domid: int | None, cr3: list[int], bp_gpa: int | None,
         seconds: float, wl: GuestWorkload, show: int) -> DemoResult:
    """Run the demo; see the module documentation."""
    out("hvfilter demo: watch one process of a virtual machine, filtered inside the hypervisor")
    out("=" * 86)
    reason: str | None = None
    if backend in ("auto", "xen") and domid is not None:
        try:
            hyp = open("xen")
        except NotOnXenError as e:
            if backend == "xen":
                raise
            reason = str(e).split("; remedy")[0].replace("open: ", "no Xen here: ")
            hyp = open("sim")
    elif backend == "xen":
        raise HvfilterError("hvfilter demo --backend xen needs --domain ID and --cr3 VALUE")
    else:
        hyp = open("sim")
        if backend == "auto":
            try:
                open("xen").close()
                reason = "Xen is here, but no --domain was given"
            except HvfilterError as e:
                reason = str(e).split("; remedy")[0].replace("open: ", "no Xen here: ")
    with hyp:
        if hyp.backend == "xen":
            assert domid is not None
            if not cr3:
                raise HvfilterError("on Xen, give the target's CR3 value(s) with --cr3 "
                                    "(e.g. from LibVMI's vmi.pid_to_dtb(pid))")
            return run_xen(out, hyp, domid, cr3, bp_gpa, seconds)
        return run_sim(out, wl, show, hyp, reason)
