"""Statistics as typed values.

Every event the filter sees is counted exactly once as forwarded, passed,
emulated or sampled out (the conservation law, :attr:`Counts.conserved`), per
event kind and per rule.

Example:
    >>> st = inst.stats()
    >>> st.kinds[Kind.CR3_WRITE].forwarded
    >>> print(st.table())

"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from hvfilter._raw import RawCounts, RawInfo, RawStats
from hvfilter.abi import ActionCode, Kind, kinds_of


@attrs.frozen
class Counts:
    """Counters of one event kind or one rule.

    Attributes:
        seen: events evaluated.
        forwarded: sent to the monitor ring (a round trip to dom0 each).
        passed: completed in Xen (action pass).
        emulated: breakpoints emulated in Xen.
        sampled_out: passed by a sample rule.
        fallbacks: emulate rules without a registered breakpoint (these are
            also counted under the fallback's action).

    Example:
        >>> c = dom.stats().kinds[Kind.BREAKPOINT]
        >>> assert c.conserved
        >>> print(f"{c.round_trips_avoided} round trips to dom0 avoided")

    """

    seen: int = 0
    forwarded: int = 0
    passed: int = 0
    emulated: int = 0
    sampled_out: int = 0
    fallbacks: int = 0

    @classmethod
    def from_raw(cls, r: RawCounts) -> Counts:
        """From the ABI's ``struct xen_hvfilter_counts``."""
        return cls(r.seen, r.forwarded, r.passed, r.emulated, r.sampled_out, r.fallbacks)

    @property
    def conserved(self) -> bool:
        """``seen == forwarded + passed + emulated + sampled_out``."""
        return self.seen == self.forwarded + self.passed + self.emulated + self.sampled_out

    @property
    def round_trips_avoided(self) -> int:
        """Events handled without a round trip to dom0."""
        return self.seen - self.forwarded

    def __add__(self, o: Counts) -> Counts:
        return Counts(self.seen + o.seen, self.forwarded + o.forwarded, self.passed + o.passed,
                      self.emulated + o.emulated, self.sampled_out + o.sampled_out,
                      self.fallbacks + o.fallbacks)


@attrs.frozen
class Stats:
    """The statistics of one domain.

    Attributes:
        generation: the table generation the rule counts belong to.
        kinds: counts per event kind (since the last reset, across tables).
        unmatched: events no rule matched (forwarded), for this table.
        rules: counts per compiled rule, for this table.

    Example:
        >>> st = dom.stats()
        >>> print(st.table())
        >>> prog.source_counts(st)       # per rule as you wrote them

    """

    generation: int
    kinds: Mapping[Kind, Counts]
    unmatched: Counts
    rules: tuple[Counts, ...]

    @classmethod
    def from_raw(cls, r: RawStats) -> Stats:
        """From the ABI's ``struct xen_hvfilter_stats``."""
        return cls(r.generation, {k: Counts.from_raw(r.kinds[k]) for k in Kind},
                   Counts.from_raw(r.unmatched), tuple(Counts.from_raw(c) for c in r.rules))

    @property
    def total(self) -> Counts:
        """The sum over all event kinds."""
        t = Counts()
        for c in self.kinds.values():
            t = t + c
        return t

    @property
    def conserved(self) -> bool:
        """Every kind and rule obeys the conservation law, and they add up.

        The rules plus ``unmatched`` add up to the kinds for events since the
        table was installed (with no reset in between).
        """
        by_rule = self.unmatched
        for c in self.rules:
            by_rule = by_rule + c
        return (all(c.conserved for c in self.kinds.values())
                and all(c.conserved for c in self.rules) and self.unmatched.conserved
                and by_rule == self.total)

    def table(self) -> str:
        """A text table, one line per event kind that was seen, and a total."""
        head = (f"{'event kind':<16}{'seen':>12}{'forwarded':>12}{'passed':>12}"
                f"{'emulated':>12}{'sampled out':>12}")
        lines = [head, "-" * len(head)]
        rows = [(k.name, c) for k, c in sorted(self.kinds.items()) if c.seen]
        rows.append(("total", self.total))
        for name, c in rows:
            lines.append(f"{name:<16}{c.seen:>12,}{c.forwarded:>12,}{c.passed:>12,}"
                         f"{c.emulated:>12,}{c.sampled_out:>12,}")
        return "\n".join(lines)


@attrs.frozen
class Info:
    """What ``get_info`` reports: ABI version, limits, capabilities, state."""

    abi_version: int
    max_rules: int
    max_conds: int
    max_total_conds: int
    max_sets: int
    max_set_entries: int
    max_breakpoints: int
    kinds: frozenset[Kind]
    actions: frozenset[ActionCode]
    nr_rules: int
    nr_sets: int
    nr_breakpoints: int
    generation: int
    mem_bytes: int

    @classmethod
    def from_raw(cls, r: RawInfo) -> Info:
        """From the ABI's ``struct xen_hvfilter_info``."""
        return cls(r.abi_version, r.max_rules, r.max_conds, r.max_total_conds, r.max_sets,
                   r.max_set_entries, r.max_breakpoints, kinds_of(r.kinds),
                   frozenset(a for a in ActionCode if r.actions & (1 << a.value)),
                   r.nr_rules, r.nr_sets, r.nr_breakpoints, r.generation, r.mem_bytes)
