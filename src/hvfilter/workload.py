"""A generated guest workload: a model of the lab's test guest.

It follows the schedule of ``lab/guest`` exactly (see its README): process 0
is the *target*, processes 1..N are busy.  Each process has a kernel
page-table root and a user root that differs only in bit 12 (Linux KPTI).
A round is N busy slices, round robin; the target runs before busy slice
0, M, 2M, ... (``gap`` M, by default ``quiet * N``).  One slice of process p:

* a CR3 write to its kernel root (the context switch; the old value is the
  previous slice's root),
* with KPTI, a CR3 write to its user root (return to user space) and one back
  to the kernel root (a system call),
* ``calls`` hits of the breakpoint planted on the guest's kernel function
  (at ``bp_rip``/``bp_gpa``, on the kernel root), ``calls2`` of the second
  one (``bp2_*``),
* ``cpuid`` CPUIDs (leaf 0) and ``msr`` writes to LSTAR, each a new value.

Before the first slice the guest writes CR3 once, to its boot page tables.
The defaults are the lab guest's addresses (kernel roots from 0x200000 in
steps of 8 KiB, boot CR3 0x1fc000, the kernel function at GPA 0x101000).

The events are generated in C (``hvf_workload_next``), tens of millions per
second, so the simulator can replay long runs; the counts below are the
closed forms of lab/guest's README.

Example:
    >>> wl = GuestWorkload(nr_busy=8, quiet=4, calls=4, rounds=1000)
    >>> wl.target_slices, wl.cr3_writes, wl.breakpoints
    (250, 24751, 33000)
    >>> target = wl.process_set(0, "target")

"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from hvfilter import _binding
from hvfilter._raw import RawEvent
from hvfilter.rules import ValueSet, process


@attrs.frozen
class GuestWorkload:
    """Parameters of the modelled guest (the lab guest's boot options).

    Args:
        nr_busy: busy processes N (``nproc=N``).
        target: process 0 is the target and runs (``target=1``).
        quiet: the target runs one slice every K rounds (``quiet=K``).
        gap: exact form: one target slice before every M-th busy slice
            (``gap=M``); default ``quiet * nr_busy``.
        calls: kernel-function calls per slice (``calls=C``).
        calls2: calls per slice of the second kernel function (``calls2=``).
        cpuid: CPUIDs (leaf 0) per slice (``cpuid=``).
        msr: writes to LSTAR (0xc0000082) per slice (``msr=``).
        kpti: three CR3 writes per slice instead of one (``kpti=1``).
        rounds: rounds of N busy slices (``rounds=R``).
        nr_vcpus: vCPUs; slices are dealt round robin (the lab guest has 1).
        pcid: give the roots Linux-style PCIDs (the lab guest has none).
        cr3_base: kernel root of process 0 (8 KiB aligned).
        cr3_stride: distance between processes' roots (multiple of 8 KiB).
        boot_cr3: the boot page tables, written once before the first slice.
        bp_gpa: guest-physical address of the breakpointed kernel function.
        bp_rip: its virtual address (same offset within the page).
        bp2_gpa, bp2_rip: the same for the second kernel function.

    Example:
        >>> wl = GuestWorkload(nr_busy=4, quiet=2, rounds=100)
        >>> dom.play(wl)

    """

    nr_busy: int = 8
    target: bool = True
    quiet: int = 1
    gap: int | None = None
    calls: int = 4
    calls2: int = 0
    cpuid: int = 0
    msr: int = 0
    kpti: bool = True
    rounds: int = 1000
    nr_vcpus: int = 1
    pcid: bool = False
    cr3_base: int = 0x200000
    cr3_stride: int = 0x2000
    boot_cr3: int = 0x1FC000
    bp_gpa: int = 0x101000
    bp_rip: int = 0xFFFF_FFFF_8010_1000
    bp2_gpa: int = 0x101800
    bp2_rip: int = 0xFFFF_FFFF_8010_1800

    @property
    def m(self) -> int:
        """The gap M: busy slices between two target slices."""
        return self.gap if self.gap is not None else self.quiet * self.nr_busy

    def params(self) -> dict[str, int]:
        """The C parameter block."""
        return {
            "nr_busy": self.nr_busy, "target": int(self.target), "gap": self.m,
            "calls": self.calls, "calls2": self.calls2, "cpuid": self.cpuid, "msr": self.msr,
            "kpti": int(self.kpti), "nr_vcpus": self.nr_vcpus,
            "pcid": int(self.pcid), "rounds": self.rounds, "cr3_base": self.cr3_base,
            "cr3_stride": self.cr3_stride, "boot_cr3": self.boot_cr3,
            "bp_gpa": self.bp_gpa, "bp_rip": self.bp_rip,
            "bp2_gpa": self.bp2_gpa, "bp2_rip": self.bp2_rip,
        }

    def root(self, proc: int, user: bool = False) -> int:
        """The CR3 value of process ``proc``'s kernel (or user) page tables."""
        return _binding.workload_root(self.params(), proc, user)

    def process_set(self, proc: int = 0, name: str = "target", capacity: int = 64) -> ValueSet:
        """The :func:`~hvfilter.process` set of one process (its kernel root)."""
        return process(name, self.root(proc), capacity=capacity)

    @property
    def busy_slices(self) -> int:
        """Slices of the busy processes: R * N."""
        return self.rounds * self.nr_busy

    @property
    def target_slices(self) -> int:
        """Slices of the target: ceil(R * N / M), 0 without a target."""
        return -(-self.busy_slices // self.m) if self.target else 0

    @property
    def slices(self) -> int:
        """All slices S."""
        return self.busy_slices + self.target_slices

    @property
    def cr3_writes(self) -> int:
        """CR3 writes in the whole run: 1 + (1 + 2 * kpti) * S (1: the boot write)."""
        return (1 if self.slices else 0) + (3 if self.kpti else 1) * self.slices

    @property
    def breakpoints(self) -> int:
        """Breakpoint hits in the whole run: (C + C2) * S."""
        return self.slices * (self.calls + self.calls2)

    @property
    def cpuids(self) -> int:
        """CPUID events in the whole run."""
        return self.slices * self.cpuid

    @property
    def msr_writes(self) -> int:
        """MSR writes in the whole run."""
        return self.slices * self.msr

    @property
    def events(self) -> int:
        """All events of the run."""
        return self.cr3_writes + self.breakpoints + self.cpuids + self.msr_writes

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
