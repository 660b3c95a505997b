"""hvfilter's memory goes away with the domain, and with the monitor.

Needs XEN_VARIANT=patched.  ``get_info.mem_bytes`` is hvfilter's global
allocation counter (every byte it holds, for all domains); it is read
through a long-lived second guest (the anchor) that never gets any hvfilter
state of its own.

1. ``ITERATIONS`` times: create a guest, enable the monitor (LibVMI with
   events, a CR3 subscription), install rules with two sets, add keys and
   two breakpoints (mem_bytes grows), then ``xl destroy`` the guest with all
   of that installed, and only then close LibVMI.  mem_bytes must come back
   to its starting value exactly after every iteration, and Xen's free
   memory (``xl info free_memory``, MiB) to its start once the domains are
   gone.
2. ``MONITOR_ITERATIONS`` times: the same installation, then LibVMI closes
   (which disables the monitor ring) while the guest lives on: its hvfilter
   state is gone (no rules, no sets, no breakpoints, generation 0 again) and
   mem_bytes is back to its start.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

import guestinfo
from hvlab import Context, LabError, domid_of, log, run_cmd, wait_until

TIMEOUT = 600
ITERATIONS = 10
MONITOR_ITERATIONS = 3
GUEST_CMDLINE = "nproc=2 rounds=1"


def free_memory_mib() -> int:
    """Xen's free memory from ``xl info`` (MiB)."""
    m = re.search(r"^free_memory\s*:\s*(\d+)", run_cmd(["xl", "info"], timeout=30), re.M)
    if not m:
        raise LabError("no free_memory line in 'xl info'")
    return int(m.group(1))


def poll_for(read: Callable[[], int], want: int, timeout: float) -> int:
    """Read until the value is ``want`` or ``timeout`` s passed; the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        v = read()
        if v == want or time.monotonic() >= deadline:
            return v
        time.sleep(0.2)  # poll interval, not synchronisation


def run(ctx: Context) -> None:
    if ctx.variant != "patched":
        ctx.require("runs on the patched hypervisor (XEN_VARIANT=patched)", False, variant=ctx.variant)
    from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode, X86Reg
    from libvmi.event import RegAccess, RegEvent

    import hvfilter as hv
    from hvfilter import CR3, NEW, OLD, Kind, forward, on, pass_
    from hvfilter._lowlevel import ShimControl

    target = hv.process("target", guestinfo.kroot(0), capacity=64)
    watched = hv.process("watched", guestinfo.kroot(1), capacity=1024)
    table = hv.compile([
        on(Kind.CR3_WRITE).when(NEW.in_(target) ^ OLD.in_(target)).then(forward),
        on(Kind.CR3_WRITE).then(pass_),
        on(Kind.BREAKPOINT).when(CR3.in_(watched)).then(forward),
    ]).table
    ctl = ShimControl.open_xen()
    anchor = ctx.create_guest(GUEST_CMDLINE, name="hvlab-teardown-anchor")
    assert anchor.domid is not None
    anchor_id = anchor.domid

    def mem() -> int:
        return ctl.get_info(anchor_id).mem_bytes

    def monitored_guest(i: int, tag: str) -> tuple[Any, Any, Any, int]:
        g = ctx.create_guest(GUEST_CMDLINE, name=f"hvlab-teardown-{tag}{i}", paused=True)
        assert g.domid is not None
        vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
        ev = RegEvent(X86Reg.CR3, RegAccess.W, lambda _v, _e: None)
        vmi.register_event(ev)
        ctl.table_replace(g.domid, table)
        ctl.set_keys(g.domid, 1, [0x4000_0000 + 0x2000 * k for k in range(100)], False)
        ctl.bp_add(g.domid, guestinfo.KFUNC_GPA, guestinfo.KFUNC_INSN)
        ctl.bp_add(g.domid, guestinfo.KFUNC2_GPA, guestinfo.KFUNC2_INSN)
        info = ctl.get_info(g.domid)
        return g, vmi, info, mem()

    try:
        mem0 = mem()
        free0 = free_memory_mib()
        log(f"start: hvfilter mem_bytes={mem0}, Xen free memory {free0} MiB")
        rows = []
        for i in range(ITERATIONS):
            g, vmi, info, held = monitored_guest(i, "d")
            domid = g.domid
            g.destroy()
            wait_until(lambda: domid_of(g.name) is None, 60, f"{g.name} to disappear")
            try:
                vmi.destroy()
            except Exception as e:  # the domain is gone; LibVMI may complain
                log(f"LibVMI destroy after the domain went: {e!r}")
            back = poll_for(mem, mem0, 30) == mem0
            rows.append({"domid": domid, "rules": info.nr_rules, "sets": info.nr_sets,
                         "breakpoints": info.nr_breakpoints, "mem_bytes_installed": held,
                         "mem_bytes_after": mem(), "back": bool(back)})
        free_end = poll_for(free_memory_mib, free0, 60)
        ctx.data.update(mem_bytes_start=mem0, free_mib_start=free0, free_mib_end=free_end, destroyed=rows)
        ctx.check(f"{ITERATIONS} guests had rules, sets and breakpoints installed",
                  all(r["rules"] == len(table.rules) and r["sets"] == 2 and r["breakpoints"] == 2
                      and r["mem_bytes_installed"] > mem0 for r in rows), rows=rows[:3])
        ctx.check("mem_bytes back to its start after every destroy (exact)",
                  all(r["mem_bytes_after"] == mem0 for r in rows), start=mem0,
                  after=[r["mem_bytes_after"] for r in rows])
        ctx.check("Xen's free memory back to its start", free_end == free0, start=free0, end=free_end)

        mon = []
        for i in range(MONITOR_ITERATIONS):
            g, vmi, info, held = monitored_guest(i, "m")
            vmi.destroy()           # disables the monitor ring
            after = ctl.get_info(g.domid)
            mon.append({"installed": [info.nr_rules, info.nr_sets, info.nr_breakpoints, info.generation],
                        "after_close": [after.nr_rules, after.nr_sets, after.nr_breakpoints, after.generation],
                        "mem_bytes_installed": held, "mem_bytes_after": after.mem_bytes})
            g.destroy()
        ctx.data["monitor_closed"] = mon
        ctx.check("closing LibVMI (monitor disabled) drops rules, sets and breakpoints",
                  all(m["installed"][:3] == [len(table.rules), 2, 2] and m["after_close"] == [0, 0, 0, 0]
                      for m in mon), mon=mon)
        ctx.check("closing LibVMI gives back every byte (mem_bytes exact)",
                  all(m["mem_bytes_installed"] > mem0 and m["mem_bytes_after"] == mem0 for m in mon),
                  start=mem0, mon=mon)
    finally:
        ctl.close()
