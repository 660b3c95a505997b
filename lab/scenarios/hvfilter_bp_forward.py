"""Process-bound breakpoints: the target's hits reach LibVMI, the rest stay in Xen.

Needs XEN_VARIANT=patched, with Xen booted with ``svm-swint-int3`` (lab/run
does so).  As in hvfilter_bp_emulate, the int3 is planted before the guest's
first instruction and the guest stops by itself after ``rounds=N``, so every
count is exact.  The rules are a VMI tool's process-bound breakpoint:

    forward a breakpoint whose CR3 belongs to the target process,
    emulate every other one inside Xen.

The tool's LibVMI callback answers each forwarded hit with EMULATE and no
instruction bytes (the Python bindings cannot send any): the patched Xen
then executes the instruction from the bytes registered with hvfilter
(xen/patches/0009).

Expectations: LibVMI receives exactly the target's calls of the kernel
function, each with a CR3 of the target; Xen emulates exactly the other
processes' calls; the guest's self-check sees no wrong result, neither for
the target's emulated-by-dom0-response calls nor the others; no exception.
"""

from __future__ import annotations

import guestinfo
from hvlab import (Cleanup, Context, guest_info, listen_until_guest_stops, log, plant_int3,
                   stop_events)

TIMEOUT = 420
ROUNDS = 300
NPROC = 4
GUEST_CMDLINE = f"nproc={NPROC} quiet=1 calls=2 work=16 kpti=1 rounds={ROUNDS}"
DONE_LIMIT_S = 300
MASK = 0x7FFF_FFFF_FFFF_E000          # a process: no bit 63, KPTI bit 12, PCID


def run(ctx: Context) -> None:
    if ctx.variant != "patched":
        ctx.require("runs on the patched hypervisor (XEN_VARIANT=patched)", False,
                    variant=ctx.variant)
    from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode
    from libvmi.event import EventResponse, IntEvent

    import hvfilter as hv
    from hvfilter import CR3, Kind, emulate, forward, on

    insn = guestinfo.KFUNC_INSN             # checked against guest memory below
    target_root = guestinfo.kroot(0)        # the target is process 0
    gpa = guestinfo.KFUNC_GPA
    g = ctx.create_guest(GUEST_CMDLINE, paused=True)
    hits: list[tuple[int, int]] = []        # (cr3, rip) of the hits LibVMI received

    def on_int3(_vmi, e):  # type: ignore[no-untyped-def]
        hits.append((e.x86_regs.cr3, e.x86_regs.rip))
        e.reinject = 0                      # ours: run the original instruction
        return EventResponse.EMULATE

    with Cleanup() as undo:
        vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
        undo.add("closing LibVMI", vmi.destroy)
        hyp = hv.open("xen")
        undo.add("closing hvfilter", hyp.close)
        dom = hyp.domain(g.domid)
        mem, _ = vmi.read_pa(gpa, len(insn))
        ctx.require("the guest image holds the published instruction", mem == insn,
                    memory=mem.hex(), published=insn.hex())
        ev = IntEvent(on_int3)
        vmi.register_event(ev)
        undo.add("clearing the int3 event", stop_events, vmi, ev)
        target = hv.process("target", target_root)
        prog = hv.compile([
            on(Kind.BREAKPOINT).when(CR3.in_(target)).named("target's hits").then(forward),
            on(Kind.BREAKPOINT).named("everyone else's").then(emulate),
        ])
        inst = dom.install(prog)
        undo.add("uninstalling the rules", inst.uninstall)
        dom.reset_stats()
        plant_int3(undo, vmi, dom, gpa, insn)

        g.unpause()
        secs = listen_until_guest_stops(vmi, DONE_LIMIT_S, f"the guest's {ROUNDS} rounds")
        final = guest_info(vmi)
        stats = dom.stats()
        c = stats.kinds[Kind.BREAKPOINT]
        tcalls = final.procs[0].calls
        log(f"{final.calls} calls, {tcalls} by the target; hvfilter forwarded {c.forwarded}, "
            f"emulated {c.emulated}; LibVMI got {len(hits)}; {secs:.1f} s")
        ctx.data.update(calls=final.calls, target_calls=tcalls, seen=c.seen,
                        forwarded=c.forwarded, emulated=c.emulated, libvmi_hits=len(hits),
                        mismatches=final.mismatches, target_mismatches=final.target_mismatches,
                        checks=final.checks, exceptions=final.exc_count, seconds=round(secs, 2),
                        stats_table=stats.table(), program=prog.dump())
        ctx.check("the guest finished its rounds",
                  final.state == guestinfo.STATE_DONE and final.rounds == ROUNDS,
                  state=final.state_name, rounds=final.rounds)
        ctx.check("the target made calls, and so did the others",
                  0 < tcalls < final.calls, target=tcalls, all=final.calls)
        ctx.check("LibVMI received exactly the target's calls", len(hits) == tcalls,
                  libvmi=len(hits), target_calls=tcalls)
        ctx.check("every hit LibVMI received came from the target",
                  all((cr3 & MASK) == (target_root & MASK) for cr3, _ in hits),
                  bad=[hex(cr3) for cr3, _ in hits if (cr3 & MASK) != (target_root & MASK)][:8])
        ctx.check("hvfilter forwarded exactly those", c.forwarded == tcalls,
                  forwarded=c.forwarded, target_calls=tcalls)
        ctx.check("everyone else's calls were emulated in Xen",
                  c.emulated == final.calls - tcalls and c.seen == final.calls,
                  emulated=c.emulated, seen=c.seen, calls=final.calls)
        ctx.check("the guest took no exception", final.exc_count == 0,
                  exceptions=final.exc_count, vector=final.last_exc_vector,
                  rip=hex(final.last_exc_rip))
        ctx.check("the guest's self-check saw no wrong result, the target's included",
                  final.checks > 0 and final.mismatches == 0 and final.target_mismatches == 0,
                  checks=final.checks, mismatches=final.mismatches,
                  target_mismatches=final.target_mismatches)
        ctx.check("statistics obey the conservation law", stats.conserved)
