"""Typed events: what a subscription delivers.

Frozen attrs classes, one per kind of interest, joined in the :data:`Event`
union.  The conversion from and to the evaluator's ``struct hvf_event``
(:func:`from_raw`, :func:`to_raw`) lives outside the classes.

Example:
    >>> for ev in sub:
    ...     match ev:
    ...         case Cr3Switch(entered=True):
    ...             print("target scheduled in on vCPU", ev.vcpu)
    ...         case Breakpoint(rip=rip, cr3=cr3):
    ...             print(f"target hit {rip:#x}")

"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import attrs

from hvfilter._raw import RawEvent
from hvfilter.abi import PAGE_SHIFT, Field, Kind

_NF = len(Field)


@attrs.frozen
class Cr3Switch:
    """A CR3 write (a context switch, or a KPTI page-table flip).

    Attributes:
        vcpu: the vCPU.
        old: the CR3 being replaced.
        new: the CR3 written.
        entered: True if ``new`` is in the watched process and ``old`` is not,
            False if the opposite or neither; None when the subscription
            watches no process.
        rip: where the write happened.

    Example:
        >>> Cr3Switch(vcpu=0, old=0x1000, new=0x2000)

    """

    vcpu: int
    old: int
    new: int
    entered: bool | None = None
    rip: int = 0


@attrs.frozen
class CrWrite:
    """A write to CR0, CR4 or XCR0 (``reg`` says which)."""

    vcpu: int
    reg: Kind
    old: int
    new: int
    cr3: int = 0
    rip: int = 0


@attrs.frozen
class MsrWrite:
    """A write to a model-specific register."""

    vcpu: int
    msr: int
    old: int
    new: int
    cr3: int = 0
    rip: int = 0


@attrs.frozen
class Breakpoint:
    """A software breakpoint (int3) hit.

    Attributes:
        vcpu: the vCPU.
        rip: the breakpoint's virtual address.
        gfn: the guest frame of ``rip``.
        cr3: the process (address space) that hit it.
        insn_length: the length of the int3 instruction (1).
        cpl: the privilege level (0: kernel, 3: user).

    Example:
        >>> Breakpoint(vcpu=0, rip=0xFFFFFFFF811234B0, gfn=0x1234, cr3=0x1000).gpa
        19088560

    """

    vcpu: int
    rip: int
    gfn: int
    cr3: int
    insn_length: int = 1
    cpl: int = 0

    @property
    def gpa(self) -> int:
        """The guest-physical address of the breakpoint."""
        return (self.gfn << PAGE_SHIFT) | (self.rip & ((1 << PAGE_SHIFT) - 1))


@attrs.frozen
class Cpuid:
    """A CPUID instruction."""

    vcpu: int
    leaf: int
    subleaf: int = 0
    cr3: int = 0
    rip: int = 0


@attrs.frozen
class OtherEvent:
    """Any other kind (single-step, debug exception, descriptor access, ...)."""

    kind: Kind
    vcpu: int
    fields: tuple[int, ...]


Event: TypeAlias = Cr3Switch | CrWrite | MsrWrite | Breakpoint | Cpuid | OtherEvent

#: The event classes by the kinds they stand for.
EVENT_KINDS: dict[type, frozenset[Kind]] = {
    Cr3Switch: frozenset({Kind.CR3_WRITE}),
    CrWrite: frozenset({Kind.CR0_WRITE, Kind.CR4_WRITE, Kind.XCR0_WRITE}),
    MsrWrite: frozenset({Kind.MSR_WRITE}),
    Breakpoint: frozenset({Kind.BREAKPOINT}),
    Cpuid: frozenset({Kind.CPUID}),
    OtherEvent: frozenset({Kind.SINGLESTEP, Kind.DEBUG_EXCEPTION, Kind.DESC_ACCESS,
                           Kind.GUEST_REQUEST, Kind.MEM_ACCESS}),
}


def raw_event(kind: Kind, *, vcpu: int = 0, cr3: int = 0, rip: int = 0, cpl: int = 0,
              new: int = 0, old: int = 0, index: int = 0, subindex: int = 0, gfn: int = 0,
              gla: int = 0) -> RawEvent:
    """An event with every field given explicitly (for feeding the simulator).

    Example:
        >>> raw_event(Kind.CPUID, vcpu=1, index=0x40000000)

    """
    f = [0] * _NF
    f[Field.VCPU] = vcpu
    f[Field.CR3] = cr3
    f[Field.RIP] = rip
    f[Field.CPL] = cpl
    f[Field.NEW_VALUE] = new
    f[Field.OLD_VALUE] = old
    f[Field.INDEX] = index
    f[Field.SUBINDEX] = subindex
    f[Field.GFN] = gfn
    f[Field.GLA] = gla
    return RawEvent(int(kind), tuple(f))


def to_raw(ev: Event | RawEvent) -> RawEvent:
    """The evaluator's view of a typed event.

    Example:
        >>> to_raw(Cr3Switch(vcpu=0, old=0x1000, new=0x2000))

    """
    match ev:
        case RawEvent():
            return ev
        case Cr3Switch():
            return raw_event(Kind.CR3_WRITE, vcpu=ev.vcpu, cr3=ev.old, rip=ev.rip,
                             new=ev.new, old=ev.old)
        case CrWrite():
            return raw_event(ev.reg, vcpu=ev.vcpu, cr3=ev.cr3, rip=ev.rip, new=ev.new,
                             old=ev.old)
        case MsrWrite():
            return raw_event(Kind.MSR_WRITE, vcpu=ev.vcpu, cr3=ev.cr3, rip=ev.rip,
                             new=ev.new, old=ev.old, index=ev.msr)
        case Breakpoint():
            return raw_event(Kind.BREAKPOINT, vcpu=ev.vcpu, cr3=ev.cr3, rip=ev.rip,
                             cpl=ev.cpl, index=ev.insn_length, gfn=ev.gfn, gla=ev.rip)
        case Cpuid():
            return raw_event(Kind.CPUID, vcpu=ev.vcpu, cr3=ev.cr3, rip=ev.rip,
                             index=ev.leaf, subindex=ev.subleaf)
        case OtherEvent():
            return RawEvent(int(ev.kind), ev.fields)


def from_raw(raw: RawEvent, member: Callable[[int], bool] | None = None) -> Event:
    """The typed event for an evaluator event.

    Args:
        raw: the event.
        member: tells whether a CR3 value belongs to the watched process
            (fills :attr:`Cr3Switch.entered`); None leaves it None.

    """
    f = raw.fields
    kind = Kind(raw.kind)
    vcpu = f[Field.VCPU]
    if kind == Kind.CR3_WRITE:
        old, new = f[Field.OLD_VALUE], f[Field.NEW_VALUE]
        entered = None if member is None else (member(new) and not member(old))
        return Cr3Switch(vcpu, old, new, entered, f[Field.RIP])
    if kind in (Kind.CR0_WRITE, Kind.CR4_WRITE, Kind.XCR0_WRITE):
        return CrWrite(vcpu, kind, f[Field.OLD_VALUE], f[Field.NEW_VALUE], f[Field.CR3],
                       f[Field.RIP])
    if kind == Kind.MSR_WRITE:
        return MsrWrite(vcpu, f[Field.INDEX], f[Field.OLD_VALUE], f[Field.NEW_VALUE],
                        f[Field.CR3], f[Field.RIP])
    if kind == Kind.BREAKPOINT:
        return Breakpoint(vcpu, f[Field.RIP], f[Field.GFN], f[Field.CR3], f[Field.INDEX],
                          f[Field.CPL])
    if kind == Kind.CPUID:
        return Cpuid(vcpu, f[Field.INDEX], f[Field.SUBINDEX], f[Field.CR3], f[Field.RIP])
    return OtherEvent(kind, vcpu, f)
