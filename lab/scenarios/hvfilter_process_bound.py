"""Process-bound CR3 monitoring filtered inside the patched hypervisor.

Needs XEN_VARIANT=patched.  The guest (target = process 0, 4 busy processes,
KPTI pairs) is created paused and LibVMI subscribes to CR3 writes before its
first instruction.  As soon as the guest has published its page-table roots
(checked in the CR3 callback, while the vCPU waits for dom0), hvfilter
installs the tutorial's rules: forward a CR3 write only when exactly one of
old/new belongs to the target, pass every other one inside Xen.  The guest
then runs ``rounds=N`` to its quiescent end.

Exact expectations come from the guest's deterministic schedule (boot write,
then kroot, uroot, kroot per slice, round robin): the writes the filter
evaluates, how many it forwards (the target's ins and outs), and that LibVMI
receives exactly the forwarded ones; the statistics obey the conservation law.
"""

from __future__ import annotations

import time

import guestinfo
from hvlab import Context, LabError, log, stop_events

TIMEOUT = 420
ROUNDS = 300
NPROC = 4
GUEST_CMDLINE = f"nproc={NPROC} quiet=1 calls=2 work=16 kpti=1 rounds={ROUNDS}"
DONE_LIMIT_S = 300
MASK = 0x7FFF_FFFF_FFFF_E000


def run(ctx: Context) -> None:
    if ctx.variant != "patched":
        ctx.require("runs on the patched hypervisor (XEN_VARIANT=patched)", False, variant=ctx.variant)
    import hvfilter as hv
    from hvfilter import NEW, OLD, Kind, forward, on, pass_
    from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode, X86Reg
    from libvmi.event import RegAccess, RegEvent

    g = ctx.create_guest(GUEST_CMDLINE, paused=True)
    vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
    hyp = hv.open("xen")
    dom = hyp.domain(g.domid)
    state: dict = {"inst": None, "k": None, "roots": None, "error": None}
    before: list[int] = []                 # values seen before the rules were installed
    after: list[tuple[int, int]] = []      # (old, new) forwarded by the filter

    def read_info() -> guestinfo.GuestInfo:
        buf, _ = vmi.read_pa(guestinfo.INFO_GPA, guestinfo.INFO_SIZE)
        return guestinfo.parse(buf)

    def on_cr3(_vmi, e):  # type: ignore[no-untyped-def]
        try:
            if state["inst"] is not None:
                after.append((e.previous, e.value))
                return
            before.append(e.value)
            try:
                info = read_info()
            except ValueError:
                return                     # info page not written yet
            if info.nprocs != NPROC + 1 or not all(p.kroot for p in info.procs):
                return
            target = hv.process("target", info.procs[0].kroot)
            prog = hv.compile([
                on(Kind.CR3_WRITE).when(NEW.in_(target) ^ OLD.in_(target)).named("target in/out").then(forward),
                on(Kind.CR3_WRITE).named("other CR3 writes").then(pass_),
            ])
            dom.reset_stats()
            state["inst"] = dom.install(prog)
            state["k"] = len(before)
            state["roots"] = [(p.kroot, p.uroot) for p in info.procs]
            state["dump"] = prog.dump()
        except Exception as ex:  # re-raised after LibVMI returns
            state["error"] = ex

    ev = RegEvent(X86Reg.CR3, RegAccess.W, on_cr3)
    registered = False
    try:
        vmi.register_event(ev)
        registered = True
        t0 = time.monotonic()
        g.unpause()
        while True:
            vmi.listen(100)
            if state["error"] is not None:
                raise state["error"]
            try:
                info = read_info()
            except ValueError:
                info = None
            if info is not None and info.state not in (guestinfo.STATE_BOOT, guestinfo.STATE_RUNNING):
                break
            if time.monotonic() - t0 > DONE_LIMIT_S:
                raise LabError(f"the guest did not finish {ROUNDS} rounds within {DONE_LIMIT_S} s")
        secs = time.monotonic() - t0
        stop_events(vmi, ev)
        registered = False
        final = read_info()
        stats = dom.stats()
        ctx.require("the rules were installed from the CR3 callback", state["inst"] is not None,
                    events_before=len(before))

        # The guest's schedule, write by write: boot, then kroot, uroot, kroot per slice.
        k, roots = state["k"], state["roots"]
        seq = [before[0]]
        for s in range(final.slices):
            kr, ur = roots[s % len(roots)]
            seq += [kr, ur, kr]
        n = final.cr3_writes
        tgt = roots[0][0] & MASK

        def in_t(v: int) -> bool:
            return (v & MASK) == tgt

        expected_fwd = sum(1 for i in range(k, n) if in_t(seq[i]) != in_t(seq[i - 1]))
        c = stats.kinds[Kind.CR3_WRITE]
        log(f"{n} CR3 writes; {k} before the install; filter saw {c.seen}, forwarded {c.forwarded}, "
            f"passed {c.passed}; LibVMI got {len(after)} after the install in {secs:.1f} s")
        ctx.data.update(guest_cr3_writes=n, before_install=k, filter_seen=c.seen, filter_forwarded=c.forwarded,
                        filter_passed=c.passed, libvmi_after_install=len(after), expected_forwarded=expected_fwd,
                        seconds=round(secs, 2), stats_table=stats.table(), program=state["dump"])
        ctx.check("the guest finished its rounds, counters consistent",
                  final.state == guestinfo.STATE_DONE and final.consistent and final.rounds == ROUNDS,
                  state=final.state_name, rounds=final.rounds)
        ctx.check("the schedule model matches the guest (3 writes per slice + boot)", len(seq) == n,
                  model=len(seq), guest=n)
        ctx.check("filter saw every CR3 write after the install (exact)", c.seen == n - k,
                  seen=c.seen, expected=n - k)
        ctx.check("filter forwarded exactly the target's ins and outs", c.forwarded == expected_fwd,
                  forwarded=c.forwarded, expected=expected_fwd)
        ctx.check("LibVMI received exactly the forwarded events", len(after) == c.forwarded,
                  libvmi=len(after), forwarded=c.forwarded)
        ctx.check("every forwarded write enters or leaves the target",
                  all(in_t(o) != in_t(v) for o, v in after), bad=[(hex(o), hex(v)) for o, v in after
                                                                   if in_t(o) == in_t(v)][:8])
        ctx.check("everything else was passed inside Xen", c.passed == c.seen - c.forwarded,
                  passed=c.passed, seen=c.seen, forwarded=c.forwarded)
        ctx.check("statistics obey the conservation law", stats.conserved)
        ctx.check("the filter avoided most round trips", c.round_trips_avoided > 5 * c.forwarded,
                  avoided=c.round_trips_avoided, forwarded=c.forwarded)
    finally:
        if registered:
            try:
                stop_events(vmi, ev)
            except Exception as e:
                log(f"cleanup: clearing the CR3 event failed: {e!r}")
        if state["inst"] is not None:
            try:
                state["inst"].uninstall()
            except Exception as e:
                log(f"cleanup: uninstalling the rules failed: {e!r}")
        vmi.destroy()
        hyp.close()
