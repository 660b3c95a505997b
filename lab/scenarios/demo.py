"""``hvfilter demo`` for real: the patched Xen, the test guest, Xen's own statistics.

Needs XEN_VARIANT=patched.  ``make lab-demo`` runs this scenario alone.

The test guest runs one target process among eight busy ones (``nproc=8
quiet=4``, no end).  LibVMI subscribes to its CR3 writes, which turns on
Xen's CR3 monitoring (without a monitor Xen raises no events, so there would
be nothing to filter), and serves the ring while ``python3 -m hvfilter demo
--domain ID --cr3 ROOT`` runs in dom0 as the administrator would run it: it
compiles the process-bound rules, installs them into the domain, watches for
``SECONDS`` and prints the hypervisor's statistics.  The target's root comes
from the guest's info page.  Its output is echoed to the console line by line
(``[hvlab] demo| ...``) and returned in the result.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Any

from cr3run import read_info
from hvlab import Context, LabError, log, wait_until

TIMEOUT = 300
SECONDS = 10
GUEST_CMDLINE = "nproc=8 quiet=4 calls=2 work=16 kpti=1 report=0"


def run(ctx: Context) -> None:
    if ctx.variant != "patched":
        ctx.require("runs on the patched hypervisor (XEN_VARIANT=patched)", False, variant=ctx.variant)
    from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode, X86Reg
    from libvmi.event import RegAccess, RegEvent

    g = ctx.create_guest(GUEST_CMDLINE)
    vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
    got = {"events": 0}

    def on_cr3(_vmi: Any, _e: Any) -> None:
        got["events"] += 1

    ev = RegEvent(X86Reg.CR3, RegAccess.W, on_cr3)
    registered = False
    try:
        info = wait_until(lambda: (i := read_info(vmi)) is not None and i.procs and i.procs[0].kroot and i,
                          60, "the guest publishing its roots")
        root = info.procs[0].kroot
        vmi.register_event(ev)
        registered = True
        argv = [sys.executable, "-m", "hvfilter", "demo", "--domain", str(g.domid),
                "--cr3", hex(root), "--seconds", str(SECONDS)]
        log(f"running: hvfilter demo --domain {g.domid} --cr3 {root:#x} --seconds {SECONDS}")
        lines: list[str] = []
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=dict(os.environ, PYTHONUNBUFFERED="1")) as p:
            assert p.stdout is not None
            fd = p.stdout.fileno()
            os.set_blocking(fd, False)
            deadline = time.monotonic() + SECONDS + 120
            buf = b""
            eof = False
            while not eof:
                vmi.listen(50)              # serve the ring while the demo runs
                try:
                    chunk = os.read(fd, 65536)
                    eof = chunk == b""
                except BlockingIOError:
                    chunk = b""
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode(errors="replace")
                    lines.append(line)
                    log(f"demo| {line}")
                if time.monotonic() > deadline:
                    p.kill()
                    raise LabError("hvfilter demo did not finish in time")
            if buf:
                lines.append(buf.decode(errors="replace"))
                log(f"demo| {lines[-1]}")
            p.wait(timeout=30)
        rc = p.returncode
        out = "\n".join(lines)
        ctx.data.update(demo_output=lines, exit_code=rc, domid=g.domid, target_cr3=hex(root),
                        libvmi_events=got["events"])
        ctx.check("hvfilter demo exits 0 (statistics conserved)", rc == 0, rc=rc, tail=lines[-10:])
        ctx.check("the demo ran on Xen, on this domain", f"Where: Xen, domain {g.domid}" in out)
        ctx.check("the hypervisor's statistics were printed with conservation OK",
                  "conservation:" in out and "OK" in out and "VIOLATED" not in out)
        m = re.search(r"Result: ([\d,]+) of ([\d,]+) events", out)
        ctx.check("Xen decided events in the hypervisor (CR3 writes seen and passed)", bool(m),
                  result_line=next((ln for ln in lines if ln.startswith("Result:")), None))
        if m:
            ctx.data.update(decided_in_xen=int(m.group(1).replace(",", "")),
                            seen=int(m.group(2).replace(",", "")))
    finally:
        if registered:
            try:
                vmi.pause_vm()
                while vmi.are_events_pending() > 0:
                    vmi.listen(10)
                vmi.clear_event(ev)
                vmi.resume_vm()
            except Exception as e:
                log(f"cleanup: clearing the CR3 event failed: {e!r}")
        vmi.destroy()
