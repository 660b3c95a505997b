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
   memory to its start: exactly, in pages (``XEN_SYSCTL_physinfo``), and as
   ``xl info free_memory`` (MiB) shows it.  LibVMI runs in a process of its
   own, the way a VMI tool does, and the exact comparison is made after the
   tool exited.  This found a leak in stock Xen 4.17: the monitor's MSR
   bitmap (2 pages) was freed only when the ring was disabled, never when a
   monitored domain died (-2 pages per guest with and without hvfilter, and
   on the plain variant); xen/patches/0010 frees it.  One warm-up cycle,
   identical to the others, runs first: the first guest created and
   destroyed after boot costs Xen a page or two once (also on stock Xen
   without any monitor); the counted cycles must then give back every page.
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


class PhysInfo:
    """Xen's free memory in pages (``XEN_SYSCTL_physinfo`` through libxenctrl).

    ``xl info`` prints the same number rounded down to MiB; this is the exact
    page count, so that a leak of even one page shows.
    """

    FREE_PAGES_OFFSET = 48   # struct xen_sysctl_physinfo: 10 x u32, total_pages, free_pages

    def __init__(self) -> None:
        import ctypes

        self._ct = ctypes
        self._lib = ctypes.CDLL("libxenctrl.so")
        self._lib.xc_interface_open.restype = ctypes.c_void_p
        self._lib.xc_interface_open.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
        self._lib.xc_physinfo.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._lib.xc_interface_close.argtypes = [ctypes.c_void_p]
        self._xch = self._lib.xc_interface_open(None, None, 0)
        if not self._xch:
            raise LabError("xc_interface_open failed")

    def free_pages(self) -> int:
        """Free pages in Xen's heap now."""
        buf = self._ct.create_string_buffer(512)   # larger than the 112-byte struct
        if self._lib.xc_physinfo(self._xch, buf) != 0:
            raise LabError("xc_physinfo failed")
        return int.from_bytes(buf.raw[self.FREE_PAGES_OFFSET:self.FREE_PAGES_OFFSET + 8], "little")

    def close(self) -> None:
        """Close the libxenctrl handle."""
        self._lib.xc_interface_close(self._xch)


def poll_for(read: Callable[[], int], want: int, timeout: float) -> int:
    """Read until the value is ``want`` or ``timeout`` s passed; the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        v = read()
        if v == want or time.monotonic() >= deadline:
            return v
        time.sleep(0.2)  # poll interval, not synchronisation


def _monitor_child(name: str, conn: Any) -> None:
    from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode, X86Reg
    from libvmi.event import RegAccess, RegEvent

    vmi = Libvmi(name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
    vmi.register_event(RegEvent(X86Reg.CR3, RegAccess.W, lambda _v, _e: None))
    conn.send("ready")
    conn.recv()                              # "close"
    try:
        vmi.destroy()
        conn.send("ok")
    except Exception as e:                   # the domain is gone; LibVMI may complain
        conn.send(f"failed: {e!r}")
    conn.recv()                              # "exit"


class MonitorProcess:
    """A VMI tool in a process of its own: LibVMI with events and a CR3 subscription.

    Whatever a tool holds is released at its exit at the latest, so the
    scenario compares Xen's free pages after the tool exited: what is
    missing then is Xen's.
    """

    def __init__(self, name: str) -> None:
        import multiprocessing

        mp = multiprocessing.get_context("fork")
        self._conn, child = mp.Pipe()
        self._proc = mp.Process(target=_monitor_child, args=(name, child), daemon=True)
        self._proc.start()
        if not self._conn.poll(120) or self._conn.recv() != "ready":
            raise LabError("the monitor process did not start LibVMI")

    def close(self) -> str:
        """vmi.destroy() in the monitor process; its outcome."""
        self._conn.send("close")
        if not self._conn.poll(60):
            raise LabError("the monitor process did not answer")
        return str(self._conn.recv())

    def exit(self) -> None:
        """End the monitor process."""
        self._conn.send("exit")
        self._proc.join(60)
        if self._proc.is_alive():
            raise LabError("the monitor process did not exit")


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
    phys = PhysInfo()
    anchor = ctx.create_guest(GUEST_CMDLINE, name="hvlab-teardown-anchor")
    assert anchor.domid is not None
    anchor_id = anchor.domid

    def mem() -> int:
        return ctl.get_info(anchor_id).mem_bytes

    def install(g: Any) -> tuple[Any, int]:
        ctl.table_replace(g.domid, table)
        ctl.set_keys(g.domid, 1, [0x4000_0000 + 0x2000 * k for k in range(100)], False)
        ctl.bp_add(g.domid, guestinfo.KFUNC_GPA, guestinfo.KFUNC_INSN)
        ctl.bp_add(g.domid, guestinfo.KFUNC2_GPA, guestinfo.KFUNC2_INSN)
        return ctl.get_info(g.domid), mem()

    try:
        def cycle(tag: str, pages_ref: int) -> dict[str, Any]:
            """One guest: monitor on, everything installed, destroyed, then the tool exits."""
            g = ctx.create_guest(GUEST_CMDLINE, name=f"hvlab-teardown-{tag}", paused=True)
            mon = MonitorProcess(g.name)
            info, held = install(g)
            domid = g.domid
            g.destroy()
            wait_until(lambda: domid_of(g.name) is None, 60, f"{g.name} to disappear")
            back = poll_for(mem, mem0, 30) == mem0
            closed = mon.close()
            mon.exit()
            pages = poll_for(phys.free_pages, pages_ref, 10)
            return {"domid": domid, "rules": info.nr_rules, "sets": info.nr_sets,
                    "breakpoints": info.nr_breakpoints, "mem_bytes_installed": held,
                    "mem_bytes_after": mem(), "back": back, "libvmi_destroy": closed,
                    "free_pages_after": pages}

        mem0 = mem()
        # Warm-up: the first guest created and destroyed after boot costs Xen a page or two
        # once (also on stock Xen with no monitor at all); it does not repeat.
        before_warmup = phys.free_pages()
        warm = cycle("warmup", before_warmup)
        free0 = free_memory_mib()
        pages0 = phys.free_pages()
        ctx.data["warmup"] = dict(warm, free_pages_before=before_warmup)
        log(f"start: hvfilter mem_bytes={mem0}, Xen free memory {free0} MiB ({pages0} pages; "
            f"warm-up cycle {pages0 - before_warmup:+d})")
        rows = [cycle(f"d{i}", pages0) for i in range(ITERATIONS)]
        free_end = poll_for(free_memory_mib, free0, 60)
        pages_end = poll_for(phys.free_pages, pages0, 20)
        ctx.data.update(mem_bytes_start=mem0, free_mib_start=free0, free_mib_end=free_end, destroyed=rows,
                        free_pages_start=pages0, free_pages_end=pages_end)
        ctx.check(f"{ITERATIONS} guests had rules, sets and breakpoints installed",
                  all(r["rules"] == len(table.rules) and r["sets"] == 2 and r["breakpoints"] == 2
                      and r["mem_bytes_installed"] > mem0 for r in rows), rows=rows[:3])
        ctx.check("mem_bytes back to its start after every destroy (exact)",
                  all(r["mem_bytes_after"] == mem0 for r in rows), start=mem0,
                  after=[r["mem_bytes_after"] for r in rows])
        ctx.check("Xen's free memory back to its start (xl info, MiB)", free_end == free0,
                  start=free0, end=free_end)
        ctx.check("Xen's free pages back to their start after every destroy and the monitor's exit "
                  "(exact, pages)",
                  pages_end == pages0 and all(r["free_pages_after"] == pages0 for r in rows),
                  start=pages0, end=pages_end, after=[r["free_pages_after"] for r in rows])

        mon = []
        for i in range(MONITOR_ITERATIONS):
            pages_before = phys.free_pages()
            g = ctx.create_guest(GUEST_CMDLINE, name=f"hvlab-teardown-m{i}", paused=True)
            vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
            vmi.register_event(RegEvent(X86Reg.CR3, RegAccess.W, lambda _v, _e: None))
            info, held = install(g)
            vmi.destroy()           # disables the monitor ring
            after = ctl.get_info(g.domid)
            g.destroy()
            wait_until(lambda: domid_of(g.name) is None, 60, f"{g.name} to disappear")
            pages_m = poll_for(phys.free_pages, pages_before, 10) - pages_before
            mon.append({"installed": [info.nr_rules, info.nr_sets, info.nr_breakpoints, info.generation],
                        "after_close": [after.nr_rules, after.nr_sets, after.nr_breakpoints, after.generation],
                        "mem_bytes_installed": held, "mem_bytes_after": after.mem_bytes,
                        "free_pages_delta": pages_m})
        ctx.data["monitor_closed"] = mon
        ctx.check("closing LibVMI (monitor disabled) drops rules, sets and breakpoints",
                  all(m["installed"][:3] == [len(table.rules), 2, 2] and m["after_close"] == [0, 0, 0, 0]
                      for m in mon), mon=mon)
        ctx.check("then destroying the guest gives back every page (exact)",
                  all(m["free_pages_delta"] == 0 for m in mon),
                  deltas=[m["free_pages_delta"] for m in mon])
        ctx.check("closing LibVMI gives back every byte (mem_bytes exact)",
                  all(m["mem_bytes_installed"] > mem0 and m["mem_bytes_after"] == mem0 for m in mon),
                  start=mem0, mon=mon)
    finally:
        phys.close()
        ctl.close()
