"""Breakpoints emulated inside the patched hypervisor, from registered bytes.

Needs XEN_VARIANT=patched, with Xen booted with ``svm-swint-int3`` (lab/run
does so: under QEMU's TCG an int3 reaches Xen only through the INTn
intercept, see xen/patches/0008).

Exact counting needs quiet boundaries: pausing a running guest lands in the
middle of a call as often as not.  So the int3 is planted before the guest's
first instruction and the guest stops by itself after ``rounds=N``:

1. a first guest boots to publish its info page, which gives the kernel
   function's first instruction (the guest image is the same every time);
2. a second guest is created paused; LibVMI subscribes to int3 (which turns
   on Xen's software-breakpoint monitoring), one rule emulates every
   breakpoint in Xen, the original instruction is registered with hvfilter
   and an int3 is written over the function's first byte;
3. the guest runs its rounds to the end.

Expectations: every call of the kernel function was one breakpoint event,
emulated in Xen (none reached LibVMI); the guest's self-check (a checksum
folded through the function's results) saw no wrong result; the guest took
no exception; and the guest saw its function's first byte replaced (its
boot check reports the code not intact), so the int3 was there throughout.
"""

from __future__ import annotations

import time

import guestinfo
from hvlab import Context, LabError, log, probe_guest

TIMEOUT = 420
ROUNDS = 300
NPROC = 4
GUEST_CMDLINE = f"nproc={NPROC} quiet=1 calls=2 work=16 kpti=1 rounds={ROUNDS}"
DONE_LIMIT_S = 300


def run(ctx: Context) -> None:
    if ctx.variant != "patched":
        ctx.require("runs on the patched hypervisor (XEN_VARIANT=patched)", False, variant=ctx.variant)
    import hvfilter as hv
    from hvfilter import Kind, emulate, on
    from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode
    from libvmi.event import IntEvent

    insn = probe_guest(ctx).kfunc_insn
    gpa = guestinfo.KFUNC_GPA
    g = ctx.create_guest(GUEST_CMDLINE, paused=True)
    vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
    hyp = hv.open("xen")
    dom = hyp.domain(g.domid)
    hits: list[tuple[int, int]] = []        # (cr3, rip) of int3s that reached LibVMI
    inst = None
    bp_registered = False

    def read_info() -> guestinfo.GuestInfo:
        buf, _ = vmi.read_pa(guestinfo.INFO_GPA, guestinfo.INFO_SIZE)
        return guestinfo.parse(buf)

    def on_int3(_vmi, e):  # type: ignore[no-untyped-def]
        # Nothing should get here: every hit is emulated in Xen.  Should one
        # arrive anyway, let the guest take its #BP, which it records.
        hits.append((e.x86_regs.cr3, e.x86_regs.rip))
        e.reinject = 1

    ev = IntEvent(on_int3)
    registered = False
    try:
        mem, _ = vmi.read_pa(gpa, len(insn))
        ctx.require("the guest image holds the published instruction at the kernel function", mem == insn,
                    memory=mem.hex(), published=insn.hex())
        vmi.register_event(ev)
        registered = True
        inst = dom.install(hv.compile([on(Kind.BREAKPOINT).named("every hit").then(emulate)]))
        dom.reset_stats()
        dom.add_breakpoint(gpa, insn)
        bp_registered = True
        vmi.write_8_pa(gpa, 0xCC)
        t0 = time.monotonic()
        g.unpause()

        while True:
            vmi.listen(100)
            try:
                info = read_info()
            except ValueError:
                info = None
            if info is not None and info.state not in (guestinfo.STATE_BOOT, guestinfo.STATE_RUNNING):
                break
            if time.monotonic() - t0 > DONE_LIMIT_S:
                raise LabError(f"the guest did not finish {ROUNDS} rounds within {DONE_LIMIT_S} s")
        secs = time.monotonic() - t0
        final = read_info()
        stats = dom.stats()
        c = stats.kinds[Kind.BREAKPOINT]
        log(f"{final.calls} kernel-function calls; hvfilter saw {c.seen}, emulated {c.emulated}, "
            f"forwarded {c.forwarded}; LibVMI got {len(hits)}; {secs:.1f} s")
        ctx.data.update(calls=final.calls, seen=c.seen, emulated=c.emulated, forwarded=c.forwarded,
                        libvmi_hits=len(hits), mismatches=final.mismatches, checks=final.checks,
                        exceptions=final.exc_count, seconds=round(secs, 2), stats_table=stats.table(),
                        insn=insn.hex())
        ctx.check("the guest finished its rounds", final.state == guestinfo.STATE_DONE and final.rounds == ROUNDS,
                  state=final.state_name, rounds=final.rounds)
        ctx.check("the int3 was in place before the guest's first instruction",
                  not final.flags & guestinfo.F_KFUNC_OK, flags=hex(final.flags))
        ctx.check("the guest took no exception (no #BP reached it)", final.exc_count == 0,
                  exceptions=final.exc_count, vector=final.last_exc_vector, rip=hex(final.last_exc_rip))
        ctx.check("every call was one breakpoint event in Xen", c.seen == final.calls and final.calls > 0,
                  seen=c.seen, calls=final.calls)
        ctx.check("every breakpoint was emulated in Xen", c.emulated == c.seen and c.forwarded == 0,
                  emulated=c.emulated, forwarded=c.forwarded, fallbacks=c.fallbacks)
        ctx.check("no breakpoint reached LibVMI", not hits, hits=len(hits))
        ctx.check("the guest's self-check ran and saw no wrong result",
                  final.checks > 0 and final.mismatches == 0, checks=final.checks, mismatches=final.mismatches)
        ctx.check("statistics obey the conservation law", stats.conserved)
    finally:
        try:
            if registered:
                vmi.pause_vm()
                vmi.write_pa(gpa, insn[:1])
                while vmi.are_events_pending() > 0:
                    vmi.listen(10)
                vmi.clear_event(ev)
                vmi.resume_vm()
        except Exception as e:
            log(f"cleanup: restoring the byte / clearing the event failed: {e!r}")
        if bp_registered:
            try:
                dom.remove_breakpoint(gpa)
            except Exception as e:
                log(f"cleanup: removing the breakpoint failed: {e!r}")
        if inst is not None:
            try:
                inst.uninstall()
            except Exception as e:
                log(f"cleanup: uninstalling the rules failed: {e!r}")
        vmi.destroy()
        hyp.close()
