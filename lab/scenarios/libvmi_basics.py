"""LibVMI (the PyPI wheel) works in dom0 against stock Xen, independent of
what the guest publishes: partial init in Xen mode with events, physical
memory reads, pause/resume, and a CR3-write subscription that delivers events
until it is cleared."""

import time

from hvlab import Context, LabError, log, wait_until

TIMEOUT = 240


def run(ctx: Context) -> None:
    t0 = time.monotonic()
    try:
        from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode, X86Reg
        from libvmi.event import RegAccess, RegEvent
    except Exception as e:  # report the loader problem precisely
        ctx.require("import libvmi", False, error=repr(e))
        return
    ctx.check("import libvmi", True, seconds=round(time.monotonic() - t0, 2))

    g = ctx.create_guest("")
    wait_until(g.console, 60, "the guest's first line on its debug console")
    vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
    try:
        ctx.check("LibVMI partial init (Xen mode, events) on the guest", True,
                  vmid=vmi.get_vmid(), vcpus=vmi.get_num_vcpus(), memsize=vmi.get_memsize())
        ctx.data["memsize"] = vmi.get_memsize()
        buf, n = vmi.read_pa(0x100000, 4096)
        ctx.check("read one page of guest-physical memory at 1 MiB", n == 4096 and len(buf) == 4096, bytes_read=n)

        seen: list[int] = []

        def on_cr3(_vmi, event):  # type: ignore[no-untyped-def]
            seen.append(event.value)

        ev = RegEvent(X86Reg.CR3, RegAccess.W, on_cr3)
        vmi.pause_vm()
        vmi.register_event(ev)
        vmi.resume_vm()
        deadline = time.monotonic() + 60
        while len(seen) < 100 and time.monotonic() < deadline:
            vmi.listen(100)
        ctx.check("CR3-write events arrive (at least 100 within 60 s)", len(seen) >= 100, seen=len(seen))
        t = time.monotonic()
        n0 = len(seen)
        while time.monotonic() - t < 2:
            vmi.listen(100)
        rate = (len(seen) - n0) / (time.monotonic() - t)
        ctx.data["cr3_events_per_s"] = round(rate, 1)
        log(f"CR3 events: {rate:.0f}/s under TCG")
        ctx.data["distinct_cr3"] = sorted({hex(v) for v in seen})[:32]
        # Stop: pause, answer what is still in the ring while the handler is
        # registered (LibVMI's listen fails on a request whose event was
        # already cleared; listen(0) fails when nothing is pending, so poll
        # with a short timeout), then clear.
        vmi.pause_vm()
        while vmi.are_events_pending() > 0:
            vmi.listen(10)
        vmi.clear_event(ev)
        n1 = len(seen)
        vmi.resume_vm()
        vmi.listen(500)  # nothing may arrive once the event is cleared
        ctx.check("no CR3 events after clear_event", len(seen) == n1, after=len(seen) - n1)
    except LabError:
        raise
    finally:
        vmi.destroy()
