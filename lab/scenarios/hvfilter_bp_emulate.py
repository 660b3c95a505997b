"""Breakpoints emulated inside the patched hypervisor, from registered bytes.

Needs XEN_VARIANT=patched, with Xen booted with ``svm-swint-int3`` (lab/run
does so: under QEMU's TCG an int3 reaches Xen only through the INTn
intercept, see xen/patches/0008).

Exact counting needs quiet boundaries: pausing a running guest lands in the
middle of a call as often as not.  So the int3 is planted before the guest's
first instruction and the guest stops by itself after ``rounds=N``:

1. the guest is created paused; its image holds the kernel function's
   first instruction (``guestinfo.KFUNC_INSN``, checked against memory);
   LibVMI subscribes to int3 (which turns on Xen's software-breakpoint
   monitoring), one rule emulates every breakpoint in Xen, the original
   instruction is registered with hvfilter and an int3 is written over the
   function's first byte;
2. the guest runs its rounds to the end.

Expectations: every call of the kernel function was one breakpoint event,
emulated in Xen (none reached LibVMI); the guest's self-check (a checksum
folded through the function's results) saw no wrong result; the guest took
no exception; and the guest saw its function's first byte replaced (its
boot check reports the code not intact), so the int3 was there throughout.
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


def run(ctx: Context) -> None:
    if ctx.variant != "patched":
        ctx.require("runs on the patched hypervisor (XEN_VARIANT=patched)", False,
                    variant=ctx.variant)
    from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode
    from libvmi.event import IntEvent

    import hvfilter as hv
    from hvfilter import Kind, emulate, on

    insn = guestinfo.KFUNC_INSN             # checked against guest memory below
    gpa = guestinfo.KFUNC_GPA
    g = ctx.create_guest(GUEST_CMDLINE, paused=True)
    hits: list[tuple[int, int]] = []        # (cr3, rip) of int3s that reached LibVMI

    def on_int3(_vmi, e):  # type: ignore[no-untyped-def]
        # Nothing should get here: every hit is emulated in Xen.  Should one
        # arrive anyway, let the guest take its #BP, which it records.
        hits.append((e.x86_regs.cr3, e.x86_regs.rip))
        e.reinject = 1

    with Cleanup() as undo:
        vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
        undo.add("closing LibVMI", vmi.destroy)
        hyp = hv.open("xen")
        undo.add("closing hvfilter", hyp.close)
        dom = hyp.domain(g.domid)
        mem, _ = vmi.read_pa(gpa, len(insn))
        ctx.require("the guest image holds the published instruction at the kernel function",
                    mem == insn, memory=mem.hex(), published=insn.hex())
        ev = IntEvent(on_int3)
        vmi.register_event(ev)
        undo.add("clearing the int3 event", stop_events, vmi, ev)
        inst = dom.install(hv.compile([on(Kind.BREAKPOINT).named("every hit").then(emulate)]))
        undo.add("uninstalling the rules", inst.uninstall)
        dom.reset_stats()
        plant_int3(undo, vmi, dom, gpa, insn)

        g.unpause()
        secs = listen_until_guest_stops(vmi, DONE_LIMIT_S, f"the guest's {ROUNDS} rounds")
        final = guest_info(vmi)
        stats = dom.stats()
        c = stats.kinds[Kind.BREAKPOINT]
        log(f"{final.calls} kernel-function calls; hvfilter saw {c.seen}, emulated {c.emulated}, "
            f"forwarded {c.forwarded}; LibVMI got {len(hits)}; {secs:.1f} s")
        ctx.data.update(calls=final.calls, seen=c.seen, emulated=c.emulated, forwarded=c.forwarded,
                        libvmi_hits=len(hits), mismatches=final.mismatches, checks=final.checks,
                        exceptions=final.exc_count, seconds=round(secs, 2),
                        stats_table=stats.table(), insn=insn.hex())
        ctx.check("the guest finished its rounds",
                  final.state == guestinfo.STATE_DONE and final.rounds == ROUNDS,
                  state=final.state_name, rounds=final.rounds)
        ctx.check("the int3 was in place before the guest's first instruction",
                  not final.flags & guestinfo.F_KFUNC_OK, flags=hex(final.flags))
        ctx.check("the guest took no exception (no #BP reached it)", final.exc_count == 0,
                  exceptions=final.exc_count, vector=final.last_exc_vector,
                  rip=hex(final.last_exc_rip))
        ctx.check("every call was one breakpoint event in Xen",
                  c.seen == final.calls and final.calls > 0, seen=c.seen, calls=final.calls)
        ctx.check("every breakpoint was emulated in Xen", c.emulated == c.seen and c.forwarded == 0,
                  emulated=c.emulated, forwarded=c.forwarded, fallbacks=c.fallbacks)
        ctx.check("no breakpoint reached LibVMI", not hits, hits=len(hits))
        ctx.check("the guest's self-check ran and saw no wrong result",
                  final.checks > 0 and final.mismatches == 0, checks=final.checks,
                  mismatches=final.mismatches)
        ctx.check("statistics obey the conservation law", stats.conserved)
