"""guestinfo.py must describe exactly the layout of lab/guest/info.h: compile
a host program that prints every offset and constant and compare.  Also unit
tests of the parser on synthetic pages (no QEMU needed)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

import guestinfo

INFO_H = Path(__file__).resolve().parents[2] / "lab" / "guest" / "info.h"

CONSTANTS = {
    "HVFG_INFO_GPA": guestinfo.INFO_GPA,
    "HVFG_INFO_VA": guestinfo.INFO_VA,
    "HVFG_KBASE": guestinfo.KBASE,
    "HVFG_INFO_SIZE": guestinfo.INFO_SIZE,
    "HVFG_INFO_MAGIC": guestinfo.INFO_MAGIC,
    "HVFG_INFO_VERSION": guestinfo.INFO_VERSION,
    "HVFG_NPROC_BUSY_MAX": guestinfo.NPROC_BUSY_MAX,
    "HVFG_NPROC_MAX": guestinfo.NPROC_MAX,
    "HVFG_NO_PROC": guestinfo.NO_PROC,
    "HVFG_KFUNC_GPA": guestinfo.KFUNC_GPA,
    "HVFG_KFUNC_VA": guestinfo.KFUNC_VA,
    "HVFG_PRIV_VA": guestinfo.PRIV_VA,
    "HVFG_BOOT_CR3": guestinfo.BOOT_CR3,
    "HVFG_ROOTS_GPA": guestinfo.ROOTS_GPA,
    "HVFG_KROOT(5)": guestinfo.kroot(5),
    "HVFG_STATE_DONE": guestinfo.STATE_DONE,
    "HVFG_STATE_HALTED": guestinfo.STATE_HALTED,
    "HVFG_HALT_EXCEPTION": guestinfo.HALT_EXCEPTION,
    "HVFG_HALT_BP": guestinfo.HALT_BP,
    "HVFG_F_XEN": guestinfo.F_XEN,
    "HVFG_F_HCALL_PAGE": guestinfo.F_HCALL_PAGE,
    "HVFG_F_DOMCTL_DONE": guestinfo.F_DOMCTL_DONE,
    "HVFG_F_KFUNC_OK": guestinfo.F_KFUNC_OK,
    "HVFG_F_OWN_DOMID": guestinfo.F_OWN_DOMID,
    "HVFG_SELFTEST_BAD": guestinfo.SELFTEST_BAD,
    "HVFG_INJECT_KBP": guestinfo.INJECT_KBP,
    "HVFG_INJECT_UBP": guestinfo.INJECT_UBP,
    "HVFG_INJECT_K2BP": guestinfo.INJECT_K2BP,
    "HVFG_KFUNC2_GPA": guestinfo.KFUNC2_GPA,
    "HVFG_KFUNC2_VA": guestinfo.KFUNC2_VA,
    "HVFG_DBG_GPA": guestinfo.DBG_GPA,
    "HVFG_DBG_VA": guestinfo.DBG_VA,
    "HVFG_DBG_LEN": guestinfo.DBG_LEN,
    "HVFG_UPAGE_GPA": guestinfo.UPAGE_GPA,
    "HVFG_UPAGE_VA": guestinfo.UPAGE_VA,
    "HVFG_UFUNC_VA": guestinfo.UFUNC_VA,
    "HVFG_UFUNC_GPA": guestinfo.UFUNC_GPA,
}


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    d = tmp_path_factory.mktemp("layout")
    lines = ['#include <stdio.h>', '#include <stddef.h>', f'#include "{INFO_H}"',
             "int main(void) {"]
    for name in guestinfo.field_offsets():
        if name.startswith("proc."):
            f = name.split(".", 1)[1]
            lines.append(f'printf("{name} %zu\\n", offsetof(struct hvfg_proc, {f}));')
        else:
            lines.append(f'printf("{name} %zu\\n", offsetof(struct hvfg_info, {name}));')
    lines.append('printf("sizeof %zu\\n", sizeof(struct hvfg_info));')
    lines.append('printf("sizeof_proc %zu\\n", sizeof(struct hvfg_proc));')
    for c in CONSTANTS:
        lines.append(f'printf("{c.replace("(", "_").replace(")", "")} %llu\\n", '
                     f'(unsigned long long)({c}));')
    lines.append("return 0; }")
    src = d / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Werror", "-o", str(d / "layout"), str(src)],
                   check=True)
    out = subprocess.run([str(d / "layout")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (ln.split() for ln in out.splitlines())}


def test_offsets_match_info_h(c_layout: dict[str, int]) -> None:
    py = guestinfo.field_offsets()
    assert {k: c_layout[k] for k in py} == py
    assert c_layout["sizeof"] == guestinfo.INFO_SIZE
    assert c_layout["sizeof_proc"] == guestinfo.PROC_SIZE


def test_constants_match_info_h(c_layout: dict[str, int]) -> None:
    def key(c: str) -> str:
        return c.replace("(", "_").replace(")", "")

    assert {c: c_layout[key(c)] for c in CONSTANTS} == CONSTANTS


def test_every_struct_field_is_parsed() -> None:
    """Every C field (bar padding) appears in GuestInfo or ProcInfo."""
    fields = set(guestinfo.GuestInfo.__dataclass_fields__)
    for name in guestinfo.field_offsets():
        if name.startswith("proc."):
            assert name[5:] in guestinfo.ProcInfo.__dataclass_fields__
        elif name not in guestinfo._PADDING | {"kfunc_insn_len", "kfunc2_insn_len",
                                                "ufunc_insn_len", "proc"}:
            assert name in fields, name


def synthetic_page(**over: int) -> bytearray:
    page = bytearray(guestinfo.INFO_SIZE)
    off = guestinfo.field_offsets()
    struct.pack_into("<QII", page, 0, guestinfo.INFO_MAGIC, guestinfo.INFO_VERSION,
                     guestinfo.INFO_SIZE)
    struct.pack_into("<I", page, off["nprocs"], 3)
    struct.pack_into("<I", page, off["kfunc_insn_len"], 2)
    page[off["kfunc_insn"]:off["kfunc_insn"] + 3] = b"\x48\x8d\xff"
    for i in range(3):
        base = guestinfo.PROC_OFFSET + i * guestinfo.PROC_SIZE
        struct.pack_into("<QQQ", page, base, 0x200000 + 0x2000 * i, 0x201000 + 0x2000 * i, 10 + i)
    for name, val in over.items():
        fmt = dict(guestinfo.HEADER_FIELDS + guestinfo.TAIL_FIELDS)[name]
        struct.pack_into("<" + fmt, page, off[name], val)
    return page


def test_parse_synthetic_page() -> None:
    info = guestinfo.parse(bytes(synthetic_page(cr3_writes=7, gen_done=5, gen_start=5,
                                                domctl_ret_dom0=-1)))
    assert info.cr3_writes == 7 and info.consistent and info.domctl_ret_dom0 == -1
    assert info.kfunc_insn == b"\x48\x8d"
    assert [p.slices for p in info.procs] == [10, 11, 12]
    assert info.target is not None and info.target.kroot == 0x200000
    assert info.proc_of_cr3(0x203000) == 1
    assert info.proc_of_cr3(0x8000000000203000 | 5) == 1
    assert info.proc_of_cr3(0x400000) is None
    assert not guestinfo.parse(bytes(synthetic_page(gen_done=4, gen_start=5))).consistent


@pytest.mark.parametrize(
    ("field", "value", "msg"),
    [("magic", 1, "magic"), ("version", 99, "version"), ("size", 100, "size"),
     ("nprocs", 66, "nprocs")],
)
def test_parse_rejects(field: str, value: int, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        guestinfo.parse(bytes(synthetic_page(**{field: value})))


def test_parse_rejects_short() -> None:
    with pytest.raises(ValueError, match="bytes"):
        guestinfo.parse(bytes(100))


def test_missing_qemu_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    import hvfg_qemu

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AssertionError, match=r"qemu-system-x86_64 not found.*make deps"):
        hvfg_qemu.find_qemu()
