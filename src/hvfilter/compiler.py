"""``compile()``: rules to the table the hypervisor installs.

Compiling is pure: no Xen, no privileges, deterministic.  It

1. encodes the rules into the ABI's table (``|``, ``^`` and negated
   conjunctions become several consecutive rules with the same action),
2. checks the table with the same rules, in the same order, as the
   hypervisor's checker ``hvf_table_check`` and explains the first problem
   in terms of the source rule and condition, and
3. runs the hypervisor's own ``hvf_table_check`` (compiled into the
   extension) as a final gate, so that a compiled program is never rejected
   by Xen as malformed.

``Program.dump()`` shows exactly what will be installed, like ``tcpdump -d``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence

import attrs

from hvfilter import _binding
from hvfilter._raw import RawCond, RawRule, RawSet, RawTable
from hvfilter.abi import (
    ALL_KINDS,
    COND_FLAGS,
    COND_NEGATE,
    LIMITS,
    MASK64,
    ActionCode,
    Cmp,
    Field,
    Kind,
    kinds_bitmap,
    kinds_of,
)
from hvfilter.errors import InvalidRuleError, LimitExceededError, UnsupportedRuleError
from hvfilter.rules import (
    Emulate,
    Forward,
    Pass,
    Rule,
    Sample,
    Test,
    TooManyConjunctions,
    ValueSet,
    dnf,
)
from hvfilter.stats import Counts, Stats


@attrs.frozen
class Problem:
    """The first reason a table is invalid, located like ``hvf_table_check`` does.

    ``rule`` and ``cond`` index the compiled table (-1: not in a rule or not
    in a condition; a set's fault has ``rule == -1`` and ``cond == -2 - set``).
    """

    errno: int
    rule: int
    cond: int
    message: str


def _name_of(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def _check_set(i: int, s: RawSet) -> Problem | None:
    where = -2 - i
    label = f"set {i} ({_name_of(s.name)!r})"
    if s.capacity > LIMITS.max_set_entries:
        return Problem(errno.E2BIG, -1, where,
                       f"{label}: capacity {s.capacity} exceeds MAX_SET_ENTRIES "
                       f"({LIMITS.max_set_entries})")
    n = LIMITS.set_name_len
    name = s.name[:n].ljust(n, b"\0")
    length = name.find(b"\0")
    if length == -1:
        return Problem(errno.EINVAL, -1, where,
                       f"{label}: name longer than {n - 1} characters")
    if length == 0:
        return Problem(errno.EINVAL, -1, where, f"{label}: empty name")
    if any(name[length:]) or len(s.name) > n:
        return Problem(errno.EINVAL, -1, where, f"{label}: name is not NUL-padded")
    if not s.mask:
        return Problem(errno.EINVAL, -1, where, f"{label}: mask 0 matches nothing useful")
    if not s.capacity:
        return Problem(errno.EINVAL, -1, where, f"{label}: capacity 0")
    if s.nr_init > s.capacity:
        return Problem(errno.EINVAL, -1, where,
                       f"{label}: {s.nr_init} initial values exceed its capacity "
                       f"{s.capacity}")
    if s.pad:
        return Problem(errno.EINVAL, -1, where, f"{label}: non-zero padding")
    return None


def _kind_names(bits: int) -> str:
    return ", ".join(k.name for k in sorted(kinds_of(bits))) or "none"


def _check_cond(c: RawCond, kinds: int, nr_sets: int) -> str | None:
    if c.field >= len(Field):
        return f"unknown field {c.field}"
    if c.cmp >= len(Cmp):
        return f"unknown operator {c.cmp}"
    if c.flags & ~COND_FLAGS:
        return f"unknown flags {c.flags:#x}"
    if c.pad:
        return "non-zero padding"
    f = Field(c.field)
    fk = kinds_bitmap(f.kinds)
    if kinds & ~fk:
        return (f"field {f.name} does not exist for {_kind_names(kinds & ~fk)} events "
                f"(it exists for {_kind_names(fk)})")
    cmp = Cmp(c.cmp)
    if cmp not in f.cmps:
        return (f"operator {cmp.name} is not allowed on {f.name} "
                f"(allowed: {', '.join(x.name for x in sorted(f.cmps))})")
    if cmp == Cmp.EQ:
        if not c.mask:
            return "mask 0"
        if c.value & ~c.mask:
            return f"value {c.value:#x} has bits outside the mask {c.mask:#x}, so it never matches"
        if c.value2 or c.set_id:
            return "value2 and set_id must be 0 for EQ"
    elif cmp == Cmp.RANGE:
        if not c.mask:
            return "mask 0"
        if (c.value | c.value2) & ~c.mask:
            return f"bounds {c.value:#x}..{c.value2:#x} have bits outside the mask {c.mask:#x}"
        if c.value > c.value2:
            return f"empty range: minimum {c.value:#x} > maximum {c.value2:#x}"
        if c.set_id:
            return "set_id must be 0 for RANGE"
    elif cmp == Cmp.ANY_BITS:
        if not c.mask:
            return "no bits to test (mask 0)"
        if c.value or c.value2 or c.set_id:
            return "value, value2 and set_id must be 0 for ANY_BITS"
    else:
        if c.mask:
            return "IN_SET applies the set's own mask: do not mask the field"
        if c.value or c.value2:
            return "value and value2 must be 0 for IN_SET"
        if c.set_id >= nr_sets:
            return f"set {c.set_id} is not declared"
    return None


def _check_rule(r: RawRule, nr_sets: int, supported: int) -> tuple[int, int, str] | None:
    if r.nr_conds > LIMITS.max_conds:
        return (errno.E2BIG, -1,
                f"{r.nr_conds} conditions exceed MAX_CONDS ({LIMITS.max_conds}); "
                f"split the rule")
    if not r.kinds:
        return errno.EINVAL, -1, "no event kind"
    if r.kinds & ~ALL_KINDS:
        return errno.EINVAL, -1, f"unknown event kinds {r.kinds & ~ALL_KINDS:#x}"
    if r.pad0 or r.pad1:
        return errno.EINVAL, -1, "non-zero padding"
    if r.action >= len(ActionCode):
        return errno.EINVAL, -1, f"unknown action {r.action}"
    act = ActionCode(r.action)
    ak = kinds_bitmap(act.kinds)
    if r.kinds & ~ak:
        return (errno.EINVAL, -1,
                f"action {act.name.lower()} is not allowed for {_kind_names(r.kinds & ~ak)} "
                f"events (allowed for {_kind_names(ak)})")
    if act == ActionCode.EMULATE:
        if r.fallback not in (ActionCode.FORWARD, ActionCode.PASS):
            return errno.EINVAL, -1, "emulate's fallback must be forward or pass"
    elif r.fallback:
        return errno.EINVAL, -1, "a fallback is only meaningful for emulate"
    if (act == ActionCode.SAMPLE) != (r.sample != 0):
        if act == ActionCode.SAMPLE:
            return errno.EINVAL, -1, "sample(0): N must be at least 1"
        return errno.EINVAL, -1, "a sample count is only meaningful for sample"
    conds = list(r.conds) + [RawCond()] * (LIMITS.max_conds - len(r.conds))
    for j, c in enumerate(conds[: LIMITS.max_conds]):
        if j >= r.nr_conds:
            if c != RawCond():
                return errno.EINVAL, j, "unused condition slot is not zero"
            continue
        msg = _check_cond(c, r.kinds, nr_sets)
        if msg:
            return errno.EINVAL, j, msg
    if r.kinds & ~supported:
        return (errno.EOPNOTSUPP, -1,
                f"this CPU cannot raise {_kind_names(r.kinds & ~supported)} events")
    return None


def check_table(t: RawTable, supported_kinds: int = ALL_KINDS) -> Problem | None:
    """Check an encoded table as the hypervisor's ``hvf_table_check`` does.

    Same checks, same order, same location of the first problem, with a
    message; the tests hold this to ``hvf_table_check`` on random tables.

    Args:
        t: the table.
        supported_kinds: bitmap of the kinds the target CPU can raise.

    Returns:
        None if the table is valid, else the first :class:`Problem`.

    """
    if len(t.rules) > LIMITS.max_rules:
        return Problem(errno.E2BIG, -1, -1,
                       f"{len(t.rules)} rules exceed MAX_RULES ({LIMITS.max_rules})")
    if len(t.sets) > LIMITS.max_sets:
        return Problem(errno.E2BIG, -1, -1,
                       f"{len(t.sets)} sets exceed MAX_SETS ({LIMITS.max_sets})")
    for i, s in enumerate(t.sets):
        p = _check_set(i, s)
        if p:
            return p
    if sum(s.nr_init for s in t.sets) != len(t.keys):
        return Problem(errno.EINVAL, -1, -1, "the number of keys is not the sum of nr_init")
    total = 0
    for i, r in enumerate(t.rules):
        bad = _check_rule(r, len(t.sets), supported_kinds)
        if bad:
            return Problem(bad[0], i, bad[1], bad[2])
        total += r.nr_conds
        if total > LIMITS.max_total_conds:
            return Problem(errno.E2BIG, i, -1,
                           f"more than MAX_TOTAL_CONDS ({LIMITS.max_total_conds}) "
                           f"conditions in the table")
    return None


# ---------------------------------------------------------------------------
# Encoding.


@attrs.frozen
class Program:
    """A compiled rule table, ready to install.

    Attributes:
        rules: the source rules.
        table: the encoded table, as the hypervisor receives it.
        origin: for each table rule, the index of its source rule.
        tests: for each table rule, the source tests of its conditions.
        sets: the value sets, in table order (their index is the set id).

    Example:
        >>> prog = compile(rules)
        >>> print(prog.dump())
        >>> prog.set_id("target")
        0

    """

    rules: tuple[Rule, ...]
    table: RawTable
    origin: tuple[int, ...]
    tests: tuple[tuple[Test, ...], ...]
    sets: tuple[ValueSet, ...]

    def set_id(self, name: str) -> int:
        """The id of the set called ``name``.

        Raises:
            KeyError: no such set in this program.

        """
        for i, s in enumerate(self.sets):
            if s.name == name:
                return i
        raise KeyError(name)

    def rule_label(self, i: int) -> str:
        """A short description of table rule ``i`` (its source rule and part)."""
        src = self.origin[i]
        parts = self.origin.count(src)
        label = f"rule {src}"
        if self.rules[src].label:
            label += f" '{self.rules[src].label}'"
        if parts > 1:
            label += f" (part {self.origin[:i].count(src) + 1} of {parts})"
        return label

    def source_counts(self, stats: Stats) -> tuple[Counts, ...]:
        """Per source rule: the counts of its compiled rules added up.

        Args:
            stats: statistics read while this program was installed.

        Returns:
            One :class:`~hvfilter.stats.Counts` per rule of :attr:`rules`.

        Example:
            >>> for rule, c in zip(prog.rules, prog.source_counts(inst.stats())):
            ...     print(rule, c.seen)

        """
        out = [Counts() for _ in self.rules]
        for i, c in enumerate(stats.rules[: len(self.origin)]):
            out[self.origin[i]] = out[self.origin[i]] + c
        return tuple(out)

    def dump(self, raw: bool = False) -> str:
        """Exactly what will be installed, one line per condition.

        Args:
            raw: also show each rule's 272 bytes as the hypervisor reads them.

        Returns:
            A multi-line string.

        Example:
            >>> print(compile(rules).dump())

        """
        out: list[str] = []
        for i, s in enumerate(self.sets):
            keys = self.table.keys[sum(x.nr_init for x in self.table.sets[:i]):][
                : self.table.sets[i].nr_init]
            shown = ", ".join(f"{k:#x}" for k in keys[:8])
            if len(keys) > 8:
                shown += f", ... ({len(keys)} keys)"
            out.append(f"set {i} {s.name!r}: mask {s.mask:#018x} capacity {s.capacity} "
                       f"keys [{shown}]")
        for i, r in enumerate(self.table.rules):
            kinds = ",".join(k.name for k in sorted(kinds_of(r.kinds)))
            act = ActionCode(r.action).name.lower()
            if r.action == ActionCode.EMULATE:
                act += f" (no breakpoint registered: {ActionCode(r.fallback).name.lower()})"
            if r.action == ActionCode.SAMPLE:
                act += f" 1/{r.sample}"
            out.append(f"({i:02d}) on {kinds} -> {act}    # {self.rule_label(i)}")
            for j in range(r.nr_conds):
                c = r.conds[j]
                neg = "!" if c.flags & COND_NEGATE else " "
                cmp = Cmp(c.cmp)
                if cmp == Cmp.IN_SET:
                    detail = f"set {c.set_id} ({self.sets[c.set_id].name})"
                elif cmp == Cmp.RANGE:
                    detail = f"mask {c.mask:#x} [{c.value:#x}, {c.value2:#x}]"
                elif cmp == Cmp.EQ:
                    detail = f"mask {c.mask:#x} == {c.value:#x}"
                else:
                    detail = f"mask {c.mask:#x}"
                out.append(f"      {neg}{Field(c.field).name:<9} {cmp.name:<8} {detail}"
                           f"    ; {self.tests[i][j]}")
            if raw:
                data = _binding.rule_bytes(r).hex()
                out.extend(f"      {data[k:k + 64]}" for k in range(0, len(data), 64))
        out.append(f"({len(self.table.rules):02d}) no rule matched -> forward")
        return "\n".join(out)


def _in_u64(v: int) -> bool:
    return 0 <= v <= MASK64


def _encode_test(t: Test, sets: dict[str, tuple[int, ValueSet]], where: str) -> RawCond:
    for name, v in (("mask", t.mask), ("value", t.value), ("value2", t.value2)):
        if not _in_u64(v):
            raise InvalidRuleError(f"{where}: {name} {v:#x} is not a 64-bit unsigned value")
    flags = COND_NEGATE if t.negated else 0
    if t.cmp == Cmp.IN_SET:
        assert t.set is not None
        set_id = sets[t.set.name][0]
        mask = 0 if t.mask == MASK64 else t.mask
        return RawCond(int(t.field), int(t.cmp), flags, set_id, 0, mask, 0, 0)
    value2 = t.value2 if t.cmp == Cmp.RANGE else 0
    value = t.value if t.cmp in (Cmp.EQ, Cmp.RANGE) else 0
    return RawCond(int(t.field), int(t.cmp), flags, 0, 0, t.mask, value, value2)


def _action(a: object) -> tuple[int, int, int]:
    if isinstance(a, Forward):
        return ActionCode.FORWARD, 0, 0
    if isinstance(a, Pass):
        return ActionCode.PASS, 0, 0
    if isinstance(a, Emulate):
        fb = ActionCode.PASS if isinstance(a.fallback, Pass) else ActionCode.FORWARD
        return ActionCode.EMULATE, fb, 0
    if isinstance(a, Sample):
        return ActionCode.SAMPLE, 0, a.n
    raise TypeError(f"not an action: {a!r}")


def compile(rules: Iterable[Rule], *, supported_kinds: Iterable[Kind] | None = None) -> Program:
    """Compile rules into the table the hypervisor will install.

    Pure and deterministic: needs neither Xen nor privileges.

    Args:
        rules: the rules, in order (the first match decides).
        supported_kinds: the kinds the target CPU can raise (``Info.kinds``);
            default all.  A rule for another kind fails here with
            :class:`UnsupportedError`'s errno (EOPNOTSUPP).

    Returns:
        The :class:`Program`.

    Raises:
        InvalidRuleError: a rule the hypervisor would reject; the message
            names the rule, the condition and the reason, and ``.rule`` /
            ``.cond`` / ``.errno`` say the same as data.
        LimitExceededError: too many rules, conditions or sets, or a set too
            large (E2BIG).

    Example:
        >>> prog = compile([on(Kind.CPUID).when(INDEX.eq(0x40000000)).then(pass_)])
        >>> print(prog.dump())

    """
    src = tuple(rules)
    supported = ALL_KINDS if supported_kinds is None else kinds_bitmap(frozenset(supported_kinds))
    sets: dict[str, tuple[int, ValueSet]] = {}
    raw_rules: list[RawRule] = []
    origin: list[int] = []
    tests: list[tuple[Test, ...]] = []

    for ri, rule in enumerate(src):
        if not isinstance(rule, Rule):
            raise InvalidRuleError(f"rule {ri}: {rule!r} is not a Rule (finish it with .then())",
                                   rule=ri)
        action, fallback, nsample = _action(rule.action)
        try:
            conjs = dnf(rule.when, LIMITS.max_rules)
        except TooManyConjunctions as e:
            raise LimitExceededError(
                f"rule {ri} ({rule}): the condition expands to more than "
                f"{LIMITS.max_rules} hypervisor rules (MAX_RULES); simplify it or use a set",
                errno=errno.E2BIG, rule=ri) from e
        if action == ActionCode.SAMPLE and len(conjs) > 1:
            raise InvalidRuleError(
                f"rule {ri} ({rule}): sample({nsample}) over a condition that needs "
                f"{len(conjs)} hypervisor rules would keep {len(conjs)} separate counters; "
                f"use a condition without | (or ^, or ~ over &), or sample each part "
                f"in its own rule", rule=ri)
        for conj in conjs:
            for t in conj:
                if t.set is not None:
                    known = sets.get(t.set.name)
                    if known is None:
                        sets[t.set.name] = (len(sets), t.set)
                    elif known[1] != t.set:
                        raise InvalidRuleError(
                            f"rule {ri} ({rule}): two different sets are named "
                            f"{t.set.name!r}", rule=ri)
            conds = tuple(_encode_test(t, sets, f"rule {ri} ({rule}), condition `{t}`")
                          for t in conj)
            raw_rules.append(RawRule(kinds=kinds_bitmap(rule.kinds), action=action,
                                     fallback=fallback, nr_conds=len(conds),
                                     sample=nsample, conds=conds))
            origin.append(ri)
            tests.append(conj)

    raw_sets: list[RawSet] = []
    keys: list[int] = []
    for name, (_, s) in sets.items():
        enc = name.encode("ascii", "replace")
        for k in (s.mask, *s.values):
            if not _in_u64(k):
                raise InvalidRuleError(f"set {name!r}: {k:#x} is not a 64-bit unsigned value")
        if not 0 <= s.capacity < 2**32:
            raise LimitExceededError(f"set {name!r}: capacity {s.capacity} is out of range",
                                     errno=errno.E2BIG)
        raw_sets.append(RawSet(enc, s.mask, s.capacity, len(s.values)))
        keys.extend(s.values)

    table = RawTable(tuple(raw_rules), tuple(raw_sets), tuple(keys))
    prog = Program(src, table, tuple(origin), tuple(tests), tuple(s for _, s in sets.values()))

    problem = check_table(table, supported)
    if problem is not None:
        raise _explain(prog, problem)

    # The final gate: the hypervisor's own checker, compiled into the extension.
    rc, bad_rule, bad_cond = _binding.table_check(table, supported)
    if rc:
        raise _explain(prog, Problem(-rc, bad_rule, bad_cond,
                                     "rejected by the hypervisor's checker"))
    return prog


def _explain(prog: Program, p: Problem) -> InvalidRuleError:
    cls: type[InvalidRuleError] = InvalidRuleError
    if p.errno in (errno.E2BIG, errno.ENOSPC):
        cls = LimitExceededError
    elif p.errno == errno.EOPNOTSUPP:
        cls = UnsupportedRuleError
    src_rule: int | None = None
    if p.rule >= 0:
        src_rule = prog.origin[p.rule]
        rule = prog.rules[src_rule]
        where = f"rule {src_rule} ({rule})"
        if prog.origin.count(src_rule) > 1:
            where += f", expanded part {prog.origin[: p.rule].count(src_rule)}"
        if p.cond >= 0 and p.cond < len(prog.tests[p.rule]):
            where += f", condition {p.cond} `{prog.tests[p.rule][p.cond]}`"
    elif p.cond <= -2:
        s = prog.sets[-2 - p.cond] if -2 - p.cond < len(prog.sets) else None
        where = f"set {s.name!r}" if s else "a set"
    else:
        where = "the table"
    name = errno.errorcode.get(p.errno, str(p.errno))
    return cls(f"{where}: {p.message} ({name})", errno=p.errno, rule=src_rule,
               cond=p.cond if p.cond >= 0 else None)


def encode_unchecked(rules: Sequence[Rule]) -> RawTable:
    """The table of ``rules`` without any check (for tests and tools).

    Lets a test hand the hypervisor's checker exactly what the language can
    express, invalid rules included.

    Raises:
        InvalidRuleError: a value that cannot be encoded at all (not 64-bit).

    """
    sets: dict[str, tuple[int, ValueSet]] = {}
    raw: list[RawRule] = []
    for rule in rules:
        action, fallback, nsample = _action(rule.action)
        for conj in dnf(rule.when):
            for t in conj:
                if t.set is not None and t.set.name not in sets:
                    sets[t.set.name] = (len(sets), t.set)
            conds = tuple(_encode_test(t, sets, str(rule)) for t in conj)
            raw.append(RawRule(kinds_bitmap(rule.kinds), action, fallback, len(conds), 0,
                               nsample, 0, conds))
    raw_sets = tuple(RawSet(n.encode("ascii", "replace"), s.mask, s.capacity, len(s.values))
                     for n, (_, s) in sets.items())
    keys = tuple(k for _, s in sets.values() for k in s.values)
    return RawTable(tuple(raw), raw_sets, keys)
