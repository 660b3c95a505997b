"""A test oracle: the rule semantics of hvfilter.h, written from the header's text.

This lives in the tests only.  The library never evaluates rules in Python;
the property tests hold the C evaluator (through the simulator) to this
plain reading of the specification.
"""

from __future__ import annotations

import attrs

from hvfilter import ActionCode, Cmp, Field, Kind, Program, RawEvent


@attrs.define
class RefDomain:
    """Reference state of one domain: the program, live sets, sample counters."""

    program: Program
    sets: list[set[int]]
    masks: list[int]
    breakpoints: dict[int, bytes] = attrs.field(factory=dict)
    sample_ctr: dict[tuple[int, int], int] = attrs.field(factory=dict)

    @classmethod
    def of(cls, program: Program) -> RefDomain:
        sets = [{v & s.mask for v in s.values} for s in program.sets]
        return cls(program, sets, [s.mask for s in program.sets])

    def cond_holds(self, c: object, ev: RawEvent) -> bool:
        from hvfilter._raw import RawCond
        assert isinstance(c, RawCond)
        v = ev.fields[c.field]
        if c.cmp == Cmp.EQ:
            hit = (v & c.mask) == c.value
        elif c.cmp == Cmp.RANGE:
            hit = c.value <= (v & c.mask) <= c.value2
        elif c.cmp == Cmp.ANY_BITS:
            hit = (v & c.mask) != 0
        else:
            hit = (v & self.masks[c.set_id]) in self.sets[c.set_id]
        return hit != bool(c.flags & 1)

    def decide(self, ev: RawEvent) -> tuple[ActionCode, int]:
        """(action, rule) for one event; updates sample counters like the spec says."""
        for i, r in enumerate(self.program.table.rules):
            if not r.kinds & (1 << ev.kind):
                continue
            if all(self.cond_holds(c, ev) for c in r.conds[: r.nr_conds]):
                return self._act(i, ev), i
        return ActionCode.FORWARD, -1

    def _act(self, i: int, ev: RawEvent) -> ActionCode:
        r = self.program.table.rules[i]
        a = ActionCode(r.action)
        if a == ActionCode.SAMPLE:
            key = (i, ev.fields[Field.VCPU])
            n = self.sample_ctr.get(key, 0)
            self.sample_ctr[key] = (n + 1) % r.sample
            return ActionCode.FORWARD if n == 0 else ActionCode.PASS
        if a == ActionCode.EMULATE:
            gpa = ((ev.fields[Field.GFN] << 12) | (ev.fields[Field.GLA] & 0xFFF)) & (2**64 - 1)
            return ActionCode.EMULATE if gpa in self.breakpoints else ActionCode(r.fallback)
        return a


ALL_KINDS = list(Kind)
