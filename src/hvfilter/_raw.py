"""Plain-Python mirrors of the ABI structures (no cffi here).

These are the values that cross the binding layer: ``_binding`` converts them
to and from cdata, the compiler produces them, and tests compare them against
the C checker.  Field names and meanings are those of
``xen/include/public/hvfilter.h``.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class RawCond:
    """One ``struct xen_hvfilter_cond``."""

    field: int = 0
    cmp: int = 0
    flags: int = 0
    set_id: int = 0
    pad: int = 0
    mask: int = 0
    value: int = 0
    value2: int = 0


@attrs.frozen
class RawRule:
    """One ``struct xen_hvfilter_rule``; ``conds`` holds up to MAX_CONDS entries.

    Entries past ``nr_conds`` are kept (they must be zero for the hypervisor),
    so that a test can build every table the C checker may see.
    """

    kinds: int
    action: int
    fallback: int = 0
    nr_conds: int = 0
    pad0: int = 0
    sample: int = 0
    pad1: int = 0
    conds: tuple[RawCond, ...] = ()


@attrs.frozen
class RawSet:
    """One ``struct xen_hvfilter_set``; ``name`` is the raw 16-byte field."""

    name: bytes
    mask: int
    capacity: int
    nr_init: int
    pad: int = 0


@attrs.frozen
class RawTable:
    """The payload of ``XEN_HVFILTER_OP_table_replace``."""

    rules: tuple[RawRule, ...] = ()
    sets: tuple[RawSet, ...] = ()
    keys: tuple[int, ...] = ()

    @property
    def nr_keys(self) -> int:
        """Number of initial keys (the sum of the sets' ``nr_init``)."""
        return len(self.keys)


@attrs.frozen
class RawCounts:
    """One ``struct xen_hvfilter_counts``."""

    seen: int = 0
    forwarded: int = 0
    passed: int = 0
    emulated: int = 0
    sampled_out: int = 0
    fallbacks: int = 0


@attrs.frozen
class RawStats:
    """``struct xen_hvfilter_stats`` (rule counts cut to ``nr_rules``)."""

    generation: int
    nr_rules: int
    kinds: tuple[RawCounts, ...]
    unmatched: RawCounts
    rules: tuple[RawCounts, ...]


@attrs.frozen
class RawInfo:
    """``struct xen_hvfilter_info``."""

    abi_version: int
    max_rules: int
    max_conds: int
    max_total_conds: int
    max_sets: int
    max_set_entries: int
    max_breakpoints: int
    kinds: int
    actions: int
    nr_rules: int
    nr_sets: int
    nr_breakpoints: int
    generation: int
    mem_bytes: int


@attrs.frozen
class RawEvent:
    """``struct hvf_event``: a kind and the ten fields (XEN_HVFILTER_FIELD_*)."""

    kind: int
    fields: tuple[int, ...]


@attrs.frozen
class RawVerdict:
    """``struct hvf_verdict``: the action taken, the deciding rule (-1: none)."""

    action: int
    rule: int
    insn: bytes = b""
