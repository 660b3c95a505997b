"""CR3 runs of the test guest with exact boundaries, for hvfilter scenarios.

A guest created paused (``xl create -p``) with ``rounds=N`` is monitored
from its first instruction and stops by itself, so every count is exact:
the guest's CR3 writes are the boot write followed by kroot, uroot, kroot
per slice, round robin over its processes (process 0 being the target).
This module holds that model; the LibVMI plumbing comes from hvlab.
"""

from __future__ import annotations

import guestinfo

# The LibVMI plumbing lives in hvlab; the names the scenarios import from here.
from hvlab import guest_info as read_info  # noqa: F401
from hvlab import listen_until_guest_stops as listen_until_done  # noqa: F401
from hvlab import stop_events  # noqa: F401

#: The mask that identifies a process by its CR3 (PCID bits and bit 12 cleared).
PROCESS_MASK = 0x7FFF_FFFF_FFFF_E000


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
