"""ABI tests: the compiled cffi declarations against a checked-in table and the header.

``abi_table.json`` records the sizes and offsets of hvfilter.h's structures
and the values of its constants.  A change of the header that is not also
made in the checked-in table (and so reviewed, with an ABI version bump)
fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import hvfilter as hv
from hvfilter import _binding
from hvfilter._native import lib
from hvfilter.abi import Op

HERE = Path(__file__).resolve().parent
TABLE = json.loads((HERE / "abi_table.json").read_text())
HEADER = HERE.parents[1] / "xen" / "include" / "public" / "hvfilter.h"


def _header_defines() -> dict[str, int]:
    out = {}
    for m in re.finditer(r"^#define\s+(XEN_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", HEADER.read_text(),
                         re.M):
        out[m.group(1)] = int(m.group(2), 0)
    return out


@pytest.mark.parametrize("struct", sorted(TABLE["structs"]))
def test_struct_layout(struct):
    want = TABLE["structs"][struct]
    assert _binding.sizeof(struct) == want["size"]
    for field, off in want["offsets"].items():
        assert _binding.offsetof(struct, field) == off, field


def test_sizes_stated_in_the_header():
    # hvfilter.h states these in its comments; the union must fit 128 bytes.
    assert _binding.sizeof("struct xen_hvfilter_cond") == 32
    assert _binding.sizeof("struct xen_hvfilter_rule") == 16 + 8 * 32
    assert _binding.sizeof("struct xen_hvfilter_set") == 40
    assert _binding.sizeof("struct xen_hvfilter_counts") == 48
    assert _binding.sizeof("struct xen_domctl_hvfilter_op") == 72 <= 128


@pytest.mark.parametrize("name", sorted(TABLE["constants"]))
def test_constant_values(name):
    if name == "XEN_DOMCTL_INTERFACE_VERSION":
        assert _binding.domctl_interface_version() == TABLE["constants"][name]
    else:
        assert getattr(lib, name) == TABLE["constants"][name]


def test_table_lists_every_constant_of_the_binding():
    assert {n for n in dir(lib) if n.startswith("XEN_")} <= set(TABLE["constants"])


def test_constants_equal_the_header_text():
    defines = _header_defines()
    assert defines, "no #define parsed from hvfilter.h"
    for name, value in defines.items():
        assert getattr(lib, name) == value, name


def test_domctl_numbers():
    assert hv.abi.DOMCTL_HVFILTER_OP == 0x4846
    # Debian 12's libxen-dev is Xen 4.17: domctl interface version 0x15.
    assert _binding.domctl_interface_version() == 0x15


@pytest.mark.parametrize(("enum", "prefix", "nr"), [
    (hv.Kind, "XEN_HVFILTER_EV_", "XEN_HVFILTER_EV_NR"),
    (hv.Field, "XEN_HVFILTER_FIELD_", "XEN_HVFILTER_FIELD_NR"),
    (hv.Cmp, "XEN_HVFILTER_CMP_", "XEN_HVFILTER_CMP_NR"),
    (hv.ActionCode, "XEN_HVFILTER_ACT_", "XEN_HVFILTER_ACT_NR"),
    (Op, "XEN_HVFILTER_OP_", "XEN_HVFILTER_OP_NR"),
])
def test_enums_equal_the_header(enum, prefix, nr):
    defines = _header_defines()
    names = {n[len(prefix):] for n in defines if n.startswith(prefix) and n != nr}
    assert {m.name.upper() for m in enum} == {n.upper() for n in names}
    for m in enum:
        cname = next(prefix + n for n in names if n.upper() == m.name)
        assert m.value == defines[cname]
    assert len(enum) == defines[nr]


def test_limits_come_from_the_header():
    d = _header_defines()
    assert hv.LIMITS.max_rules == d["XEN_HVFILTER_MAX_RULES"]
    assert hv.LIMITS.max_conds == d["XEN_HVFILTER_MAX_CONDS"]
    assert hv.LIMITS.max_total_conds == d["XEN_HVFILTER_MAX_TOTAL_CONDS"]
    assert hv.LIMITS.max_sets == d["XEN_HVFILTER_MAX_SETS"]
    assert hv.LIMITS.max_set_entries == d["XEN_HVFILTER_MAX_SET_ENTRIES"]
    assert hv.LIMITS.max_breakpoints == d["XEN_HVFILTER_MAX_BREAKPOINTS"]


def test_evaluator_tables_are_reachable():
    # The compiler uses the evaluator's own field/action tables.
    assert hv.Kind.CR3_WRITE in hv.Field.NEW_VALUE.kinds
    assert hv.Kind.BREAKPOINT not in hv.Field.NEW_VALUE.kinds
    assert hv.ActionCode.EMULATE.kinds == frozenset({hv.Kind.BREAKPOINT})
    assert hv.Cmp.ANY_BITS not in hv.Field.CPL.cmps
