"""The ABI's enumerations and limits, valued from the C header.

Every number here comes from ``xen/include/public/hvfilter.h`` through the
compiled extension (``lib.*``); none is written twice.

Example:
    >>> from hvfilter.abi import Kind, LIMITS
    >>> Kind.CR3_WRITE.bit
    2
    >>> LIMITS.max_rules
    64

"""

from __future__ import annotations

import enum

import attrs

from hvfilter._binding import action_kinds, const, field_cmps, field_kinds


class Kind(enum.IntEnum):
    """Event kinds (``XEN_HVFILTER_EV_*``)."""

    CR0_WRITE = const("XEN_HVFILTER_EV_CR0_WRITE")
    CR3_WRITE = const("XEN_HVFILTER_EV_CR3_WRITE")
    CR4_WRITE = const("XEN_HVFILTER_EV_CR4_WRITE")
    XCR0_WRITE = const("XEN_HVFILTER_EV_XCR0_WRITE")
    MSR_WRITE = const("XEN_HVFILTER_EV_MSR_WRITE")
    BREAKPOINT = const("XEN_HVFILTER_EV_BREAKPOINT")
    SINGLESTEP = const("XEN_HVFILTER_EV_SINGLESTEP")
    DEBUG_EXCEPTION = const("XEN_HVFILTER_EV_DEBUG_EXCEPTION")
    CPUID = const("XEN_HVFILTER_EV_CPUID")
    DESC_ACCESS = const("XEN_HVFILTER_EV_DESC_ACCESS")
    GUEST_REQUEST = const("XEN_HVFILTER_EV_GUEST_REQUEST")
    MEM_ACCESS = const("XEN_HVFILTER_EV_MEM_ACCESS")

    @property
    def bit(self) -> int:
        """The bit of this kind in a rule's ``kinds`` bitmap."""
        return 1 << self.value


class Field(enum.IntEnum):
    """Event fields a condition can test (``XEN_HVFILTER_FIELD_*``)."""

    VCPU = const("XEN_HVFILTER_FIELD_VCPU")
    CR3 = const("XEN_HVFILTER_FIELD_CR3")
    RIP = const("XEN_HVFILTER_FIELD_RIP")
    CPL = const("XEN_HVFILTER_FIELD_CPL")
    NEW_VALUE = const("XEN_HVFILTER_FIELD_NEW_VALUE")
    OLD_VALUE = const("XEN_HVFILTER_FIELD_OLD_VALUE")
    INDEX = const("XEN_HVFILTER_FIELD_INDEX")
    SUBINDEX = const("XEN_HVFILTER_FIELD_SUBINDEX")
    GFN = const("XEN_HVFILTER_FIELD_GFN")
    GLA = const("XEN_HVFILTER_FIELD_GLA")

    @property
    def kinds(self) -> frozenset[Kind]:
        """The event kinds this field exists for (the evaluator's own table)."""
        bits = field_kinds(self.value)
        return frozenset(k for k in Kind if bits & k.bit)

    @property
    def cmps(self) -> frozenset[Cmp]:
        """The operators allowed on this field (the evaluator's own table)."""
        bits = field_cmps(self.value)
        return frozenset(c for c in Cmp if bits & (1 << c.value))


class Cmp(enum.IntEnum):
    """Comparison operators (``XEN_HVFILTER_CMP_*``)."""

    EQ = const("XEN_HVFILTER_CMP_EQ")
    RANGE = const("XEN_HVFILTER_CMP_RANGE")
    ANY_BITS = const("XEN_HVFILTER_CMP_ANY_BITS")
    IN_SET = const("XEN_HVFILTER_CMP_IN_SET")


class ActionCode(enum.IntEnum):
    """Actions (``XEN_HVFILTER_ACT_*``)."""

    FORWARD = const("XEN_HVFILTER_ACT_FORWARD")
    PASS = const("XEN_HVFILTER_ACT_PASS")
    EMULATE = const("XEN_HVFILTER_ACT_EMULATE")
    SAMPLE = const("XEN_HVFILTER_ACT_SAMPLE")

    @property
    def kinds(self) -> frozenset[Kind]:
        """The event kinds this action may apply to (the evaluator's own table)."""
        bits = action_kinds(self.value)
        return frozenset(k for k in Kind if bits & k.bit)


class Op(enum.IntEnum):
    """Sub-operations of ``XEN_DOMCTL_hvfilter_op`` (``XEN_HVFILTER_OP_*``)."""

    GET_INFO = const("XEN_HVFILTER_OP_get_info")
    TABLE_REPLACE = const("XEN_HVFILTER_OP_table_replace")
    SET_ADD = const("XEN_HVFILTER_OP_set_add")
    SET_REMOVE = const("XEN_HVFILTER_OP_set_remove")
    SET_FLUSH = const("XEN_HVFILTER_OP_set_flush")
    BP_ADD = const("XEN_HVFILTER_OP_bp_add")
    BP_REMOVE = const("XEN_HVFILTER_OP_bp_remove")
    STATS_GET = const("XEN_HVFILTER_OP_stats_get")
    STATS_RESET = const("XEN_HVFILTER_OP_stats_reset")


COND_NEGATE: int = const("XEN_HVFILTER_COND_NEGATE")
COND_FLAGS: int = const("XEN_HVFILTER_COND_FLAGS")
ALL_KINDS: int = (1 << const("XEN_HVFILTER_EV_NR")) - 1
INTERFACE_VERSION: int = const("XEN_HVFILTER_INTERFACE_VERSION")
DOMCTL_HVFILTER_OP: int = const("XEN_DOMCTL_hvfilter_op")
PAGE_SHIFT: int = const("HVF_PAGE_SHIFT")
MASK64: int = (1 << 64) - 1


@attrs.frozen
class Limits:
    """The fixed limits of the ABI (``XEN_HVFILTER_MAX_*``)."""

    max_rules: int
    max_conds: int
    max_total_conds: int
    max_sets: int
    max_set_entries: int
    max_breakpoints: int
    max_insn_len: int
    set_name_len: int


LIMITS = Limits(
    max_rules=const("XEN_HVFILTER_MAX_RULES"),
    max_conds=const("XEN_HVFILTER_MAX_CONDS"),
    max_total_conds=const("XEN_HVFILTER_MAX_TOTAL_CONDS"),
    max_sets=const("XEN_HVFILTER_MAX_SETS"),
    max_set_entries=const("XEN_HVFILTER_MAX_SET_ENTRIES"),
    max_breakpoints=const("XEN_HVFILTER_MAX_BREAKPOINTS"),
    max_insn_len=const("XEN_HVFILTER_MAX_INSN_LEN"),
    set_name_len=const("XEN_HVFILTER_SET_NAME_LEN"),
)


def kinds_bitmap(kinds: frozenset[Kind] | set[Kind]) -> int:
    """The ``kinds`` bitmap of a set of kinds."""
    bits = 0
    for k in kinds:
        bits |= k.bit
    return bits


def kinds_of(bits: int) -> frozenset[Kind]:
    """The kinds in a ``kinds`` bitmap (unknown bits are ignored)."""
    return frozenset(k for k in Kind if bits & k.bit)
