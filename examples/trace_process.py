#!/usr/bin/env python3
"""Trace one process's context switches and kernel-function calls, live.

    trace_process.py DOMAIN --cr3 ROOT [--cr3 ROOT...] --function GPA:LEN[:NAME]...

Only the process's events leave Xen: hvfilter passes every other CR3 write
and emulates every other breakpoint hit inside the hypervisor.  Stop with
Ctrl-C or SIGTERM; the planted int3s are removed on every way out.
Example (the lab's test guest: target root 0x200000, kfunc at GPA 0x101000):
    trace_process.py hvlab-guest --cr3 0x200000 --function 0x101000:8:kfunc
"""
import argparse
import contextlib
import sys
import time

import hvfilter as hv
from hvfilter.libvmi_adapter import Monitor, ProcessScope

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("domain", help="domain name (xl list)")
ap.add_argument("--cr3", action="append", type=lambda s: int(s, 0), required=True,
                help="a page-table root of the process (repeat for several)")
ap.add_argument("--function", action="append", default=[],
                help="GPA:LEN[:NAME] of a kernel function's first instruction")
a = ap.parse_args()
names: dict[int, str] = {}

with hv.open("xen") as hyp, Monitor.open(hyp, a.domain) as mon:
    for spec in a.function:
        gpa, length, *name = spec.split(":")
        names[int(gpa, 0)] = name[0] if name else gpa
        mon.plant(int(gpa, 0), int(length, 0))
    sub = mon.watch(ProcessScope("target", *a.cr3), hv.Cr3Switch, hv.Breakpoint)
    t0 = time.monotonic()

    @sub.on
    def show(ev: hv.Event) -> None:
        """Print one of the target's events (only those leave Xen)."""
        t = time.monotonic() - t0
        if isinstance(ev, hv.Cr3Switch):
            how = "in " if ev.entered else "out"
            print(f"[{t:9.3f}] vcpu{ev.vcpu} switch {how} {ev.old:#x} -> {ev.new:#x}", flush=True)
        elif isinstance(ev, hv.Breakpoint):
            print(f"[{t:9.3f}] vcpu{ev.vcpu} call {names.get(ev.gpa, hex(ev.gpa))} "
                  f"rip={ev.rip:#x} cr3={ev.cr3:#x}", flush=True)

    print(f"tracing {a.domain}: cr3 {', '.join(map(hex, a.cr3))}", flush=True)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):   # Ctrl-C; SIGTERM via Monitor
        mon.run()
    print(f"stopped: {mon.stats['delivered']} events ({mon.stats['received']} reached dom0)",
          flush=True)
sys.exit(0)
