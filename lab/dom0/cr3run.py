"""CR3 runs of the test guest with exact boundaries, for hvfilter scenarios.

A guest created paused (``xl create -p``) with ``rounds=N`` is monitored
from its first instruction and stops by itself, so every count is exact:
the guest's CR3 writes are the boot write followed by kroot, uroot, kroot
per slice, round robin over its processes (process 0 being the target).
This module holds that model and the LibVMI plumbing the scenarios share.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import guestinfo
from hvlab import LabError

#: The mask that identifies a process by its CR3 (PCID bits and bit 12 cleared).
PROCESS_MASK = 0x7FFF_FFFF_FFFF_E000


def read_info(vmi: Any) -> Optional[Any]:
    """The guest's info page through LibVMI, or None until it is published."""
    buf, _ = vmi.read_pa(guestinfo.INFO_GPA, guestinfo.INFO_SIZE)
    try:
        return guestinfo.parse(buf)
    except ValueError:
        return None


def schedule(nprocs: int, slices: int) -> list[int]:
    """The guest's CR3 values, write by write: boot, then kroot, uroot, kroot per slice."""
    seq = [guestinfo.BOOT_CR3]
    for s in range(slices):
        kr = guestinfo.kroot(s % nprocs)
        seq += [kr, kr | 0x1000, kr]
    return seq


def transitions(seq: list[int], target_proc: int = 0, first_old: int = 0) -> list[tuple[int, int]]:
    """The (old, new) writes that enter or leave the target process, in order.

    ``first_old`` is the CR3 before the boot write (not the target's).
    """
    tgt = guestinfo.kroot(target_proc) & PROCESS_MASK

    def in_t(v: int) -> bool:
        return (v & PROCESS_MASK) == tgt

    out = []
    prev = first_old
    for v in seq:
        if in_t(prev) != in_t(v):
            out.append((prev, v))
        prev = v
    return out


def listen_until_done(vmi: Any, limit_s: float, what: str,
                      between: Optional[Callable[[], None]] = None) -> float:
    """Serve LibVMI events until the guest stopped by itself; returns the seconds.

    ``between`` runs after every ``listen`` (e.g. to re-raise what a callback
    stored, or to act while the guest runs).
    """
    t0 = time.monotonic()
    while True:
        vmi.listen(100)
        if between is not None:
            between()
        info = read_info(vmi)
        if info is not None and info.state not in (guestinfo.STATE_BOOT, guestinfo.STATE_RUNNING):
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit_s:
            raise LabError(f"{what} did not finish within {limit_s} s")


def stop_events(vmi: Any, *events: Any) -> None:
    """Pause, answer what is pending, clear the events, resume (docs/lab.md's order)."""
    vmi.pause_vm()
    try:
        while vmi.are_events_pending() > 0:
            vmi.listen(10)
        for ev in events:
            vmi.clear_event(ev)
    finally:
        vmi.resume_vm()
