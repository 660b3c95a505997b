"""Process-bound monitoring through hvfilter's LibVMI adapter, and the example tool.

Needs XEN_VARIANT=patched (rules in Xen, svm-swint-int3, patch 0009).

1. examples/trace_process.py, run as a user would (a subprocess), traces the
   target of a guest created paused; the guest runs ``rounds=R`` to its end;
   SIGTERM stops the tool.  Exact: it printed one switch in and one switch
   out per target slice and one call per kernel-function call of the
   target, all with the target's CR3, in order; only those reached dom0; on
   exit the int3 is gone from guest memory and no rule or breakpoint is left
   in Xen; the guest's self-check is clean (every foreign hit was emulated in
   Xen, every target hit answered EMULATE from Python).
2. The API in-process: the scope starts as busy process 1; from the first
   event's callback it is changed to the target (add + remove, while the
   vCPU waits): every later event concerns the target, none process 1.
   Then a callback raises: the exception reaches the caller of listen(),
   and leaving the ``with`` block restores the byte, clears the events,
   removes rules and breakpoint, and resumes the guest, which then finishes
   its rounds unmonitored with a clean self-check.
3. Domain.subscribe() on Xen without a Monitor: the adapter opens LibVMI
   itself; iterating gives the boot write and then the processes' CR3
   writes in order; closing the hypervisor handle releases LibVMI and the
   guest finishes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import guestinfo
from hvlab import Context, LabError, log, probe_guest, wait_until

TIMEOUT = 500
NPROC = 4
CALLS = 2
ROUNDS = 100
CMDLINE = f"nproc={NPROC} quiet=1 calls={CALLS} work=16 kpti=1 rounds={ROUNDS} report=0"
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                       "trace_process.py")
DONE_S = 300


class Boom(Exception):
    """Raised by a callback on purpose."""


def reader(vmi: Any) -> Any:
    def read() -> guestinfo.GuestInfo | None:
        buf, _ = vmi.read_pa(guestinfo.INFO_GPA, guestinfo.INFO_SIZE)
        try:
            return guestinfo.parse(buf)
        except ValueError:
            return None
    return read


def part_example(ctx: Context, insn: bytes, troot: int) -> None:
    import hvfilter as hv
    from libvmi import INIT_DOMAINNAME, Libvmi, VMIMode

    g = ctx.create_guest(CMDLINE, paused=True)
    lines: list[str] = []
    argv = [sys.executable, EXAMPLE, g.name, "--cr3", hex(troot),
            "--function", f"{guestinfo.KFUNC_GPA:#x}:{len(insn)}:kfunc"]
    log("running " + " ".join(argv))
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t = threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")), daemon=True)
    t.start()
    vmi = Libvmi(g.name, INIT_DOMAINNAME, mode=VMIMode.XEN, partial=True)    # reading only
    read = reader(vmi)
    try:
        wait_until(lambda: any(x.startswith("tracing") for x in lines) or p.poll() is not None,
                   120, "the example tool to start tracing")
        ctx.require("the example tool started tracing", any(x.startswith("tracing") for x in lines),
                    output=lines[-20:])
        g.unpause()
        info = wait_until(lambda: (lambda i: i if i and i.state == guestinfo.STATE_DONE else None)(read()),
                          DONE_S, "the guest finishing its rounds under the example tool")
        # Every event of the finished guest was printed before its last round
        # ended (the vCPU waited for each answer); now stop the tool.
        p.send_signal(signal.SIGTERM)
        rc = p.wait(60)
        t.join(10)
        out = [x.rstrip("\n") for x in lines]
        switches = [x for x in out if " switch " in x]
        calls = [x for x in out if " call " in x]
        T = info.target.slices
        ctx.data["example"] = {"argv": argv[1:], "exit": rc, "lines": len(out), "head": out[:8],
                               "tail": out[-4:], "target_slices": T, "switches": len(switches),
                               "calls": len(calls)}
        ctx.check("example: exited 0 after SIGTERM", rc == 0, rc=rc, tail=out[-10:])
        ctx.check("example: one switch in and one out per target slice, alternating",
                  len(switches) == 2 * T and all((" in " in x) == (i % 2 == 0) for i, x in enumerate(switches)),
                  switches=len(switches), target_slices=T)
        ctx.check("example: one call line per kernel-function call of the target, with its CR3",
                  len(calls) == info.target.calls == CALLS * T
                  and all(f"cr3={troot:#x}" in x and "call kfunc" in x for x in calls),
                  calls=len(calls), guest=info.target.calls)
        n = 2 * T + CALLS * T
        ctx.check("example: only the target's events reached dom0",
                  any(x == f"stopped: {n} events ({n} reached dom0)" for x in out), expected=n, tail=out[-3:])
        mem, _ = vmi.read_pa(guestinfo.KFUNC_GPA, len(insn))
        ctx.check("example: the int3 is gone from guest memory after exit", mem == insn, memory=mem.hex())
        with hv.open("xen") as hyp:
            di = hyp.domain(g.domid).info()
        ctx.check("example: no rule and no breakpoint left in Xen", di.nr_rules == 0 and di.nr_breakpoints == 0,
                  rules=di.nr_rules, breakpoints=di.nr_breakpoints)
        ctx.check("example: the guest's self-check is clean",
                  info.mismatches == 0 and info.exc_count == 0 and info.checks > 0 and info.rounds == ROUNDS,
                  mismatches=info.mismatches, exceptions=info.exc_count)
    finally:
        if p.poll() is None:
            p.kill()
        vmi.destroy()


def part_api(ctx: Context, insn: bytes, troot: int, other: int) -> None:
    import hvfilter as hv
    from hvfilter.libvmi_adapter import Monitor, ProcessScope
    from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode

    g = ctx.create_guest(CMDLINE, paused=True)
    vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
    read = reader(vmi)
    hyp = hv.open("xen")
    dom = hyp.domain(g.domid)
    before: list[hv.Event] = []
    after: list[hv.Event] = []
    raised: BaseException | None = None
    scope = ProcessScope("watched", other)
    try:
        with Monitor(dom, vmi) as mon:
            mon.plant(guestinfo.KFUNC_GPA, insn=insn)
            sub = mon.watch(scope, hv.Cr3Switch, hv.Breakpoint)

            @sub.on
            def cb(ev: hv.Event) -> None:
                if other in scope:
                    before.append(ev)
                    scope.add(troot)            # the hypervisor's set follows at once
                    scope.remove(other)
                    return
                after.append(ev)
                if len(after) == 40:
                    raise Boom("on purpose")

            g.unpause()
            t0 = time.monotonic()
            try:
                while time.monotonic() - t0 < DONE_S:
                    mon.listen(0.1)
            except Boom as e:
                raised = e
            ctx.check("api: the callback's exception reached the caller of listen()", raised is not None)
            ctx.check("api: the exception came after 40 events of the new scope", len(after) == 40,
                      after=len(after))
        mem, _ = vmi.read_pa(guestinfo.KFUNC_GPA, len(insn))
        di = dom.info()
        ctx.check("api: leaving the block restored the byte", mem == insn, memory=mem.hex())
        ctx.check("api: leaving the block removed rules and breakpoint", di.nr_rules == 0 and di.nr_breakpoints == 0,
                  rules=di.nr_rules, breakpoints=di.nr_breakpoints)

        def mine(ev: hv.Event) -> tuple[bool, bool]:
            vals = (ev.old, ev.new) if isinstance(ev, hv.Cr3Switch) else (ev.cr3,)  # type: ignore[union-attr]
            return (any(v in ProcessScope("t", troot) for v in vals),
                    any(v in ProcessScope("o", other) for v in vals))

        ctx.check("api: the first event concerned the first scope (process 1)",
                  len(before) == 1 and mine(before[0])[1], before=[repr(e) for e in before])
        # A switch between the target and process 1 concerns both; an event
        # concerning process 1 alone would mean the old key is still in Xen.
        ctx.check("api: after the change every event concerned the target, none process 1 alone",
                  all(mine(e)[0] for e in after),
                  bad=[repr(e) for e in after if not mine(e)[0]][:4])
        ctx.check("api: after the change the target also switched with processes other than 1",
                  any(isinstance(e, hv.Cr3Switch) and not mine(e)[1] for e in after))
        ctx.check("api: both kinds arrived after the change",
                  {type(e).__name__ for e in after} == {"Cr3Switch", "Breakpoint"})
        info = wait_until(lambda: (lambda i: i if i and i.state == guestinfo.STATE_DONE else None)(read()),
                          DONE_S, "the guest finishing its rounds after the monitor left")
        ctx.check("api: the guest ran on and finished with a clean self-check",
                  info.rounds == ROUNDS and info.mismatches == 0 and info.exc_count == 0,
                  mismatches=info.mismatches, exceptions=info.exc_count)
        ctx.data["api"] = {"after": len(after), "first": repr(before[0]) if before else None,
                           "after_head": [repr(e) for e in after[:4]]}
    finally:
        vmi.destroy()
        hyp.close()


def part_subscribe(ctx: Context) -> None:
    """Domain.subscribe() on Xen: the adapter opens LibVMI by itself; iterate."""
    import itertools

    import hvfilter as hv
    from libvmi import INIT_DOMAINNAME, Libvmi, VMIMode

    g = ctx.create_guest("nproc=2 quiet=1 calls=1 work=16 kpti=1 rounds=20 report=0", paused=True)
    hyp = hv.open("xen")
    try:
        sub = hyp.domain(g.domid).subscribe(hv.Cr3Switch)
        g.unpause()
        evs = list(itertools.islice(sub, 10))
    finally:
        hyp.close()                      # closes the adapter: events cleared, LibVMI released
    vmi = Libvmi(g.name, INIT_DOMAINNAME, mode=VMIMode.XEN, partial=True)
    try:
        info = wait_until(lambda: (lambda i: i if i and i.state == guestinfo.STATE_DONE else None)(reader(vmi)()),
                          DONE_S, "the guest finishing after the subscription closed")
    finally:
        vmi.destroy()
    roots = {guestinfo.kroot(p) | k for p in range(3) for k in (0, 0x1000)}
    ctx.data["subscribe"] = {"events": [repr(e) for e in evs[:4]], "cr3_writes": info.cr3_writes}
    ctx.check("subscribe: Domain.subscribe() on Xen delivered typed CR3 events by iteration",
              len(evs) == 10 and all(isinstance(e, hv.Cr3Switch) for e in evs), got=len(evs))
    ctx.check("subscribe: the first is the boot write, then the processes' roots",
              evs[0].new == guestinfo.BOOT_CR3 and all(e.new in roots for e in evs[1:]),
              first=hex(evs[0].new), news=[hex(e.new) for e in evs[1:]])
    ctx.check("subscribe: each event's old value is the previous event's new one",
              all(a.new == b.old for a, b in zip(evs, evs[1:])))
    ctx.check("subscribe: after close the guest ran to its end, self-check clean",
              info.rounds == 20 and info.mismatches == 0 and info.exc_count == 0,
              rounds=info.rounds, mismatches=info.mismatches)


def run(ctx: Context) -> None:
    if ctx.variant != "patched":
        ctx.require("runs on the patched hypervisor (XEN_VARIANT=patched)", False, variant=ctx.variant)
    if not os.path.isfile(EXAMPLE):
        raise LabError(f"{EXAMPLE} is not in the overlay")
    probe = probe_guest(ctx)
    insn = probe.kfunc_insn
    troot = probe.procs[0].kroot
    part_example(ctx, insn, troot)
    part_api(ctx, insn, troot, guestinfo.kroot(1))
    part_subscribe(ctx)
