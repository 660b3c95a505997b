"""The rule language: rules as Python values.

A rule names the event kinds it applies to, a condition and an action::

    from hvfilter import on, CR3, NEW, OLD, Kind, forward, pass_, emulate, process

    target = process("target", 0x1_2340_0000)
    rules = [
        # CR3 writes that enter or leave the target: exactly one side in the set
        on(Kind.CR3_WRITE).when(NEW.in_(target) ^ OLD.in_(target)).then(forward),
        on(Kind.CR3_WRITE).then(pass_),
        # our breakpoint: report hits inside the target, emulate the others in Xen
        on(Kind.BREAKPOINT).when(CR3.in_(target)).then(forward),
        on(Kind.BREAKPOINT).then(emulate),
    ]

Conditions test one event field (``VCPU``, ``CR3``, ``RIP``, ``CPL``, ``NEW``,
``OLD``, ``INDEX``, ``SUBINDEX``, ``GFN``, ``GLA``) with ``eq``, ``between``,
``any_bits`` or ``in_`` (a named :class:`ValueSet`).  They combine with ``&``,
``|``, ``^`` and ``~``.  The hypervisor evaluates conjunctions of possibly
negated tests; ``compile()`` turns ``|`` (and ``^``, and ``~`` over ``&``) into
several consecutive rules with the same action, which is equivalent because
the first matching rule decides.

All values here are immutable and hashable; nothing is checked against the
hypervisor's rules until :func:`hvfilter.compile`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

import attrs

from hvfilter.abi import MASK64, Cmp, Field, Kind

#: PCID, bits 0-11 of CR3 (with CR4.PCIDE).
PCID_MASK = 0xFFF
#: Linux KPTI: the user page tables sit at kernel root | 1 << 12.
KPTI_BIT = 1 << 12
#: The no-flush hint, bit 63 of a CR3 write (with PCIDs).
NOFLUSH_BIT = 1 << 63
#: The key mask of a process: the CR3 bits that identify its address space.
PROCESS_MASK = MASK64 & ~(PCID_MASK | KPTI_BIT | NOFLUSH_BIT)


def _u64(v: int) -> int:
    return int(v)


def _ints(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@attrs.frozen
class ValueSet:
    """A named set of 64-bit keys with a key mask, installed with the rules.

    An event value ``v`` is in the set when ``v & mask`` is one of the keys
    (keys are stored masked).  The contents can change while installed
    (:meth:`hvfilter.Installation.set`); ``values`` is the initial contents.

    Args:
        name: 1 to 15 ASCII characters, unique within a program.
        mask: the key mask (not 0); see :data:`PROCESS_MASK`.
        values: the initial keys.
        capacity: the most keys the set may ever hold (1..MAX_SET_ENTRIES).

    Example:
        >>> kernel_threads = ValueSet("kthreads", mask=PROCESS_MASK, values=(0x1000000,))

    """

    name: str
    mask: int = MASK64
    values: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    capacity: int = 64

    def __str__(self) -> str:
        return self.name


def process(name: str, *cr3: int, capacity: int = 64) -> ValueSet:
    """The set of CR3 values of a process (or of several processes).

    The mask is :data:`PROCESS_MASK`, so one key matches the process whatever
    its PCID, whether it runs on its kernel or its KPTI user page tables, and
    whether the no-flush bit is set.

    Args:
        name: the set's name.
        *cr3: CR3 values (DTBs) of the process, e.g. from ``vmi.pid_to_dtb()``.
        capacity: the most CR3 values the set can hold while installed.

    Returns:
        A :class:`ValueSet` with mask :data:`PROCESS_MASK`.

    Example:
        >>> target = process("target", 0x1f4d3000)
        >>> hex(target.mask)
        '0x7fffffffffffe000'

    """
    return ValueSet(name, PROCESS_MASK, tuple(cr3), capacity)


class _CondOps:
    """``&``, ``|``, ``^`` and ``~`` for every condition."""

    def __and__(self, other: Cond) -> Cond:
        return AllOf((_as_cond(self), other))

    def __or__(self, other: Cond) -> Cond:
        return AnyOf((_as_cond(self), other))

    def __xor__(self, other: Cond) -> Cond:
        me = _as_cond(self)
        return (me & ~other) | (~me & other)

    def __invert__(self) -> Cond:
        raise NotImplementedError


@attrs.frozen
class Test(_CondOps):
    """One test of one field: what the hypervisor evaluates.

    Built by the methods of :class:`FieldRef` (``NEW.eq(5)``,
    ``CR3.in_(target)``...), not directly.
    """

    field: Field
    cmp: Cmp
    mask: int = MASK64
    value: int = 0
    value2: int = 0
    set: ValueSet | None = None
    negated: bool = False

    def __invert__(self) -> Test:
        return attrs.evolve(self, negated=not self.negated)

    def __str__(self) -> str:
        name = _FIELD_NAMES[self.field]
        if self.mask != MASK64 and self.cmp != Cmp.ANY_BITS:
            name = f"({name} & {self.mask:#x})"
        if self.cmp == Cmp.EQ:
            return f"{name} {'!=' if self.negated else '=='} {self.value:#x}"
        if self.cmp == Cmp.RANGE:
            body = f"{self.value:#x} <= {name} <= {self.value2:#x}"
        elif self.cmp == Cmp.ANY_BITS:
            body = f"{name} & {self.mask:#x}"
            if self.negated:
                return f"{body} == 0"
            return f"{body} != 0"
        else:
            setname = self.set.name if self.set is not None else "?"
            return f"{name} {'not in' if self.negated else 'in'} {setname}"
        return f"not ({body})" if self.negated else body


@attrs.frozen
class AllOf(_CondOps):
    """A conjunction; ``AllOf(())`` is :data:`always`."""

    parts: tuple[Cond, ...]

    def __invert__(self) -> Cond:
        return AnyOf(tuple(~p for p in self.parts))

    def __str__(self) -> str:
        if not self.parts:
            return "always"
        return " & ".join(_paren(p) for p in self.parts)


@attrs.frozen
class AnyOf(_CondOps):
    """A disjunction; ``AnyOf(())`` is :data:`never`."""

    parts: tuple[Cond, ...]

    def __invert__(self) -> Cond:
        return AllOf(tuple(~p for p in self.parts))

    def __str__(self) -> str:
        if not self.parts:
            return "never"
        return " | ".join(_paren(p) for p in self.parts)


Cond: TypeAlias = Test | AllOf | AnyOf

#: The condition that always holds (a rule without conditions).
always: Cond = AllOf(())
#: The condition that never holds (compiles to no rule at all).
never: Cond = AnyOf(())


def _as_cond(x: object) -> Cond:
    assert isinstance(x, Test | AllOf | AnyOf)
    return x


def _paren(c: Cond) -> str:
    return f"({c})" if isinstance(c, AllOf | AnyOf) and len(c.parts) > 1 else str(c)


@attrs.frozen
class FieldRef:
    """An event field, optionally masked, to build tests from.

    Use the module's ready-made references (``CR3``, ``NEW``...).  Every
    method returns a :class:`Test`.

    Example:
        >>> NEW.masked(PROCESS_MASK).eq(0x1f4d2000)
        >>> RIP.between(0xffffffff81000000, 0xffffffff81ffffff)
        >>> CPL.eq(3)                 # user mode
        >>> INDEX.in_(msrs)           # MSR number in a set

    """

    field: Field
    mask: int = MASK64

    def masked(self, mask: int) -> FieldRef:
        """The field ANDed with ``mask`` before comparing (EQ, RANGE)."""
        return FieldRef(self.field, self.mask & _u64(mask))

    def eq(self, value: int) -> Test:
        """``(field & mask) == value``."""
        return Test(self.field, Cmp.EQ, self.mask, _u64(value))

    def ne(self, value: int) -> Test:
        """``(field & mask) != value``."""
        return ~self.eq(value)

    def between(self, lo: int, hi: int) -> Test:
        """``lo <= (field & mask) <= hi``."""
        return Test(self.field, Cmp.RANGE, self.mask, _u64(lo), _u64(hi))

    def any_bits(self, bits: int) -> Test:
        """``field & bits != 0`` (also ANDed with this reference's mask)."""
        return Test(self.field, Cmp.ANY_BITS, self.mask & _u64(bits))

    def no_bits(self, bits: int) -> Test:
        """``field & bits == 0``."""
        return ~self.any_bits(bits)

    def in_(self, s: ValueSet) -> Test:
        """``field & s.mask`` is a key of the set ``s`` (the set's mask applies)."""
        return Test(self.field, Cmp.IN_SET, self.mask, 0, 0, s)

    def not_in(self, s: ValueSet) -> Test:
        """The negation of :meth:`in_`."""
        return ~self.in_(s)


VCPU = FieldRef(Field.VCPU)
CR3 = FieldRef(Field.CR3)
RIP = FieldRef(Field.RIP)
CPL = FieldRef(Field.CPL)
NEW = FieldRef(Field.NEW_VALUE)
OLD = FieldRef(Field.OLD_VALUE)
INDEX = FieldRef(Field.INDEX)
SUBINDEX = FieldRef(Field.SUBINDEX)
GFN = FieldRef(Field.GFN)
GLA = FieldRef(Field.GLA)

_FIELD_NAMES = {
    Field.VCPU: "VCPU", Field.CR3: "CR3", Field.RIP: "RIP", Field.CPL: "CPL",
    Field.NEW_VALUE: "NEW", Field.OLD_VALUE: "OLD", Field.INDEX: "INDEX",
    Field.SUBINDEX: "SUBINDEX", Field.GFN: "GFN", Field.GLA: "GLA",
}


# ---------------------------------------------------------------------------
# Actions.


@attrs.frozen
class Forward:
    """Send the event to the monitor ring, as without hvfilter."""

    def __str__(self) -> str:
        return "forward"


@attrs.frozen
class Pass:
    """Complete the event inside Xen as if nobody monitored it."""

    def __str__(self) -> str:
        return "pass"


@attrs.frozen
class Emulate:
    """Breakpoints only: execute the registered original instruction in Xen.

    Args:
        fallback: what to do when no breakpoint is registered at the
            event's address (a guest-owned int3): :data:`pass_` reinjects it.

    """

    fallback: Forward | Pass = Pass()

    def __str__(self) -> str:
        return f"emulate (else {self.fallback})"


@attrs.frozen
class Sample:
    """Forward the first of every ``n`` matching events of each vCPU, pass the rest."""

    n: int

    def __str__(self) -> str:
        return f"sample 1/{self.n}"


Action: TypeAlias = Forward | Pass | Emulate | Sample

forward = Forward()
pass_ = Pass()
emulate = Emulate()


def sample(n: int) -> Sample:
    """The action that forwards one event in ``n`` (per vCPU), passing the others.

    Example:
        >>> on(Kind.CPUID).then(sample(100))

    """
    return Sample(n)


# ---------------------------------------------------------------------------
# Rules.


def _kinds(kinds: Iterable[Kind]) -> frozenset[Kind]:
    return frozenset(Kind(k) for k in kinds)


@attrs.frozen
class Rule:
    """One rule: event kinds, a condition, an action, an optional label.

    Example:
        >>> Rule(frozenset({Kind.CPUID}), pass_, INDEX.eq(0x40000000))

    """

    kinds: frozenset[Kind] = attrs.field(converter=_kinds)
    action: Action
    when: Cond = always
    label: str | None = None

    def __str__(self) -> str:
        kinds = ",".join(k.name for k in sorted(self.kinds))
        s = f"on {kinds}"
        if self.when != always:
            s += f" when {self.when}"
        s += f" then {self.action}"
        if self.label:
            s += f"  [{self.label}]"
        return s


@attrs.frozen
class RuleBuilder:
    """``on(kinds).when(cond).then(action)``; see :func:`on`."""

    kinds: frozenset[Kind]
    cond: Cond = always
    label: str | None = None

    def when(self, cond: Cond) -> RuleBuilder:
        """Add a condition (ANDed with earlier ones)."""
        c = cond if self.cond == always else AllOf((self.cond, cond))
        return attrs.evolve(self, cond=c)

    def named(self, label: str) -> RuleBuilder:
        """Give the rule a label, shown by ``dump()`` and in statistics."""
        return attrs.evolve(self, label=label)

    def then(self, action: Action) -> Rule:
        """Finish the rule with its action."""
        return Rule(self.kinds, action, self.cond, self.label)


def on(*kinds: Kind) -> RuleBuilder:
    """Start a rule for one or more event kinds.

    Example:
        >>> on(Kind.CR0_WRITE, Kind.CR4_WRITE).when(CPL.eq(0)).then(pass_)

    """
    return RuleBuilder(_kinds(kinds))


class TooManyConjunctions(Exception):
    """Raised by :func:`dnf` when the expansion exceeds its limit."""


def dnf(c: Cond, limit: int | None = None) -> list[tuple[Test, ...]]:
    """The condition as a disjunction of conjunctions of tests.

    Each conjunction becomes one hypervisor rule.  Negation is already pushed
    down to the tests by ``~``.

    Args:
        c: the condition.
        limit: stop with :class:`TooManyConjunctions` as soon as the
            expansion has more conjunctions than this (a chain of ``^``
            doubles at every step).

    Example:
        >>> len(dnf(NEW.eq(1) ^ OLD.eq(1)))
        2

    """
    def check(n: int) -> None:
        if limit is not None and n > limit:
            raise TooManyConjunctions(n)

    if isinstance(c, Test):
        return [(c,)]
    if isinstance(c, AnyOf):
        out: list[tuple[Test, ...]] = []
        for p in c.parts:
            out.extend(dnf(p, limit))
            check(len(out))
        return out
    acc: list[tuple[Test, ...]] = [()]
    for p in c.parts:
        part = dnf(p, limit)
        check(len(acc) * len(part))
        acc = [a + b for a in acc for b in part]
    return acc
