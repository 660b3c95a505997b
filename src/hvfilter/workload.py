"""A generated guest workload: a model of the lab's test guest.

The guest runs ``nr_procs`` processes round-robin.  Each process has a
kernel page-table root and, with Linux KPTI, a user root that differs only
in bit 12 (and, with PCIDs, in its PCID).  The process of interest (the
*target*) runs one slice every ``target_every`` rounds; the others run every
round.  One slice of a process:

* a CR3 write to its kernel root (the scheduler switches to it; the old
  value is the previous process's kernel root),
* a CR3 write to its user root (return to user space),
* ``calls`` times: a CR3 write to the kernel root (system call), a hit of the
  breakpoint planted on one kernel function (at ``bp_rip``/``bp_gpa``, with
  the current CR3), a CR3 write back to the user root,
* a CR3 write to the kernel root (timer interrupt, back to the scheduler).

The events are generated in C (``hvf_workload_next``) at tens of millions per
second, so the simulator can replay long runs.

Example:
    >>> wl = GuestWorkload(nr_procs=8, target=3, target_every=4, calls=16, rounds=1000)
    >>> wl.cr3_writes, wl.breakpoints
    (...)
    >>> target = wl.process_set(3, "target")

"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from hvfilter import _binding
from hvfilter._raw import RawEvent
from hvfilter.rules import ValueSet, process


@attrs.frozen
class GuestWorkload:
    """Parameters of the modelled guest; see the module documentation.

    Args:
        nr_procs: number of processes (N).
        target: index of the process of interest.
        target_every: the target runs one slice every K rounds.
        calls: kernel-function calls per slice (C).
        rounds: scheduling rounds.
        nr_vcpus: vCPUs; slices are dealt to them round-robin.
        pcid: give the roots Linux-style PCIDs (bits 0-11).
        cr3_base: kernel root of process 0 (8 KiB aligned).
        cr3_stride: distance between processes' roots (multiple of 8 KiB).
        bp_gpa: guest-physical address of the breakpointed kernel function.
        bp_rip: its virtual address (same offset within the page).

    Example:
        >>> wl = GuestWorkload(nr_procs=4, target=1, rounds=100)
        >>> dom.play(wl)

    """

    nr_procs: int = 8
    target: int = 3
    target_every: int = 4
    calls: int = 16
    rounds: int = 1000
    nr_vcpus: int = 1
    pcid: bool = True
    cr3_base: int = 0x1_0000_0000
    cr3_stride: int = 0x40_0000
    bp_gpa: int = 0x0123_4567 & ~0xFFF | 0x4B0
    bp_rip: int = 0xFFFF_FFFF_8112_34B0

    def params(self) -> dict[str, int]:
        """The C parameter block."""
        return {
            "nr_procs": self.nr_procs, "target": self.target,
            "target_every": self.target_every, "calls": self.calls,
            "nr_vcpus": self.nr_vcpus, "pcid": int(self.pcid), "rounds": self.rounds,
            "cr3_base": self.cr3_base, "cr3_stride": self.cr3_stride,
            "bp_gpa": self.bp_gpa, "bp_rip": self.bp_rip,
        }

    def root(self, proc: int, user: bool = False) -> int:
        """The CR3 value of process ``proc``'s kernel (or user) page tables."""
        return _binding.workload_root(self.params(), proc, user)

    def process_set(self, proc: int, name: str = "target", capacity: int = 64) -> ValueSet:
        """The :func:`~hvfilter.process` set of one process (its kernel root)."""
        return process(name, self.root(proc), capacity=capacity)

    @property
    def target_slices(self) -> int:
        """Slices the target runs."""
        return (self.rounds + self.target_every - 1) // self.target_every

    @property
    def slices(self) -> int:
        """Slices of all processes."""
        return self.rounds * (self.nr_procs - 1) + self.target_slices

    @property
    def cr3_writes(self) -> int:
        """CR3 writes in the whole run."""
        return self.slices * (3 + 2 * self.calls)

    @property
    def breakpoints(self) -> int:
        """Breakpoint hits in the whole run."""
        return self.slices * self.calls

    @property
    def events(self) -> int:
        """All events of the run."""
        return self.cr3_writes + self.breakpoints

    def generator(self) -> _binding.CWorkload:
        """A fresh C generator of this workload's events."""
        return _binding.CWorkload(self.params())

    def iter_events(self, chunk: int = 4096) -> Iterator[RawEvent]:
        """All events, as Python values (slow; for tests and inspection)."""
        gen = self.generator()
        buf = _binding.EventBuffer(chunk)
        while gen.next_into(buf):
            for i in range(buf.length):
                yield buf.get(i)
