"""Parser for the hvfilter test guest's info page (layout: lab/guest/info.h).

Pure Python, standard library only (``struct``)::

    from guestinfo import parse, INFO_GPA, INFO_SIZE
    info = parse(page_bytes)          # 4096 bytes read at INFO_GPA
    if info.consistent:
        print(info.cr3_writes, info.target.slices)

``parse`` raises ``ValueError`` for a page that is not an info page of this
layout version.  A snapshot taken in the middle of an update group has
``consistent == False``: take another one (see info.h, "Consistency").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

INFO_GPA: Final = 0x0100_0000
KBASE: Final = 0xFFFF_FFFF_8000_0000
INFO_VA: Final = KBASE + INFO_GPA
INFO_SIZE: Final = 4096
INFO_MAGIC: Final = 0x4F46_4E49_4746_5648  # "HVFGINFO"
INFO_VERSION: Final = 3
NPROC_BUSY_MAX: Final = 64
NPROC_MAX: Final = NPROC_BUSY_MAX + 1
NO_PROC: Final = 0xFFFF_FFFF
KFUNC_GPA: Final = 0x10_1000
KFUNC_VA: Final = KBASE + KFUNC_GPA
KFUNC2_GPA: Final = KFUNC_GPA + 0x800
KFUNC2_VA: Final = KBASE + KFUNC2_GPA
# The original first instructions (also published in the info page, and
# checked against the built image by tests/guest/test_elf.py): a tool can
# plant its breakpoints before the guest's first instruction without booting
# a probe guest to read them.
KFUNC_INSN: Final = bytes.fromhex("488d84fe95e9d15b")   # lea 0x5bd1e995(%rsi,%rdi,8), %rax
KFUNC2_INSN: Final = bytes.fromhex("488b05f9060000")    # mov 0x6f9(%rip), %rax
UFUNC_INSN: Final = bytes.fromhex("4869c691f44525")     # imul $0x2545f491, %rsi, %rax
DBG_GPA: Final = KFUNC_GPA + 0xC00
DBG_VA: Final = KBASE + DBG_GPA
DBG_LEN: Final = 0x40
PRIV_VA: Final = 0x40_0000
BOOT_CR3: Final = 0x1F_C000
ROOTS_GPA: Final = 0x20_0000
UPAGE_GPA: Final = 0x10_2000
UPAGE_VA: Final = 0x40_1000
UFUNC_GPA: Final = UPAGE_GPA
UFUNC_VA: Final = UPAGE_VA

STATE_BOOT: Final = 0
STATE_RUNNING: Final = 1
STATE_DONE: Final = 2
STATE_HALTED: Final = 3
STATE_NAMES: Final = {0: "boot", 1: "running", 2: "done", 3: "halted"}

HALT_NONE: Final = 0
HALT_DONE: Final = 1
HALT_EXCEPTION: Final = 2
HALT_BP: Final = 3
HALT_NAMES: Final = {0: "none", 1: "done", 2: "exception", 3: "bp-at-kfunc-or-ufunc"}

F_XEN: Final = 1 << 0
F_HCALL_PAGE: Final = 1 << 1
F_DOMCTL_DONE: Final = 1 << 2
F_KFUNC_OK: Final = 1 << 3
F_OWN_DOMID: Final = 1 << 4

SELFTEST_OFF: Final = 0
SELFTEST_GOOD: Final = 1
SELFTEST_BAD: Final = 2

INJECT_NONE: Final = 0
INJECT_UD: Final = 1
INJECT_GP: Final = 2
INJECT_PF: Final = 3
INJECT_BP: Final = 4
INJECT_KBP: Final = 5
INJECT_UBP: Final = 6
INJECT_K2BP: Final = 7
INJECT_NAMES: Final = {
    0: "none", 1: "ud", 2: "gp", 3: "pf", 4: "bp", 5: "kbp", 6: "ubp", 7: "k2bp",
}

# (name, struct format) in memory order, up to proc[]; "x" padding is never
# used: padding fields are named (pad*, reserved) and are zero.
HEADER_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("magic", "Q"),
    ("version", "I"),
    ("size", "I"),
    ("gen_done", "Q"),
    ("state", "I"),
    ("halt_reason", "I"),
    ("flags", "I"),
    ("xen_version", "I"),
    ("opt_nproc", "I"),
    ("opt_target", "I"),
    ("opt_quiet", "I"),
    ("opt_gap", "I"),
    ("opt_calls", "I"),
    ("opt_work", "I"),
    ("opt_kpti", "I"),
    ("opt_domctl", "I"),
    ("opt_selftest_int3", "I"),
    ("opt_report", "I"),
    ("opt_rounds", "Q"),
    ("opt_exit", "I"),
    ("opt_bphalt", "I"),
    ("opt_inject", "I"),
    ("opt_user", "I"),
    ("opt_ucalls", "I"),
    ("opt_cpuid", "I"),
    ("opt_msr", "I"),
    ("pad0", "I"),
    ("nprocs", "I"),
    ("target_index", "I"),
    ("kfunc_va", "Q"),
    ("kfunc_gpa", "Q"),
    ("kfunc_insn", "16s"),
    ("kfunc_insn_len", "I"),
    ("current_proc", "I"),
    ("ufunc_va", "Q"),
    ("ufunc_gpa", "Q"),
    ("ufunc_insn", "16s"),
    ("ufunc_insn_len", "I"),
    ("pad1", "I"),
    ("cr3_writes", "Q"),
    ("cr3_writes_boot", "Q"),
    ("slices", "Q"),
    ("switches", "Q"),
    ("calls", "Q"),
    ("work", "Q"),
    ("rounds", "Q"),
    ("ucalls", "Q"),
    ("cpuids", "Q"),
    ("msr_writes", "Q"),
    ("checks", "Q"),
    ("mismatches", "Q"),
    ("umismatches", "Q"),
    ("target_mismatches", "Q"),
    ("as_checks", "Q"),
    ("as_mismatches", "Q"),
    ("ev_mismatches", "Q"),
    ("round_checksum", "Q"),
    ("round_checksum_ref", "Q"),
    ("exc_count", "Q"),
    ("last_exc_vector", "I"),
    ("last_exc_proc", "I"),
    ("last_exc_rip", "Q"),
    ("last_exc_error", "Q"),
    ("last_exc_cr2", "Q"),
    ("last_exc_cr3", "Q"),
    ("bp_selftest_hits", "Q"),
    ("spurious_irqs", "Q"),
    ("last_exc_cpl", "I"),
    ("pad2", "I"),
    ("domctl_ret_dom0", "q"),
    ("domctl_ret_self", "q"),
    ("domctl_ret_own", "q"),
    ("own_domid", "I"),
    ("pad3", "I"),
    ("tsc_khz", "I"),
    ("pad4", "I"),
    ("tsc_first", "Q"),
    ("tsc_round", "Q"),
    ("tsc_done", "Q"),
    ("cr3_pending", "Q"),
    ("cr3_pending_proc", "I"),
    ("pad5", "I"),
    ("opt_calls2", "I"),
    ("pad6", "I"),
    ("kfunc2_va", "Q"),
    ("kfunc2_gpa", "Q"),
    ("kfunc2_insn", "16s"),
    ("kfunc2_insn_len", "I"),
    ("pad7", "I"),
    ("calls2", "Q"),
    ("mismatches2", "Q"),
    ("opt_tf", "I"),
    ("pad8", "I"),
    ("dbg_va", "Q"),
    ("dbg_gpa", "Q"),
    ("tf_steps", "Q"),
    ("db_hits", "Q"),
    ("reserved", "352s"),
)
PROC_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("kroot", "Q"),
    ("uroot", "Q"),
    ("slices", "Q"),
    ("calls", "Q"),
    ("work", "Q"),
    ("cr3_writes", "Q"),
)
# After proc[]: gen_start, always the last field of the page.
TAIL_FIELDS: Final[tuple[tuple[str, str], ...]] = (("gen_start", "Q"),)
_PADDING: Final = frozenset(
    {"pad0", "pad1", "pad2", "pad3", "pad4", "pad5", "pad6", "pad7", "pad8", "reserved"}
)

_HEADER: Final = struct.Struct("<" + "".join(f for _, f in HEADER_FIELDS))
_PROC: Final = struct.Struct("<" + "".join(f for _, f in PROC_FIELDS))
_TAIL: Final = struct.Struct("<" + "".join(f for _, f in TAIL_FIELDS))
PROC_OFFSET: Final = _HEADER.size
PROC_SIZE: Final = _PROC.size
TAIL_OFFSET: Final = PROC_OFFSET + NPROC_MAX * PROC_SIZE
GEN_START_OFFSET: Final = INFO_SIZE - 8

assert PROC_OFFSET == 968 and PROC_SIZE == 48 and TAIL_OFFSET == GEN_START_OFFSET
assert TAIL_OFFSET + _TAIL.size == INFO_SIZE


def kroot(proc: int) -> int:
    """The kernel root (CR3 value) of process ``proc``; its user root is
    ``kroot(proc) | 0x1000``.  The info page publishes the same values."""
    return ROOTS_GPA + 0x2000 * proc


def field_offsets() -> dict[str, int]:
    """Offset of every field of ``struct hvfg_info`` (``proc`` and the
    padding included) and of ``struct hvfg_proc`` (as ``proc.<name>``)."""
    out: dict[str, int] = {}
    off = 0
    for name, fmt in HEADER_FIELDS:
        out[name] = off
        off += struct.calcsize("<" + fmt)
    out["proc"] = off
    off = TAIL_OFFSET
    for name, fmt in TAIL_FIELDS:
        out[name] = off
        off += struct.calcsize("<" + fmt)
    off = 0
    for name, fmt in PROC_FIELDS:
        out["proc." + name] = off
        off += struct.calcsize("<" + fmt)
    return out


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One process: its two CR3 values and its counters."""

    index: int
    kroot: int
    uroot: int
    slices: int
    calls: int
    work: int
    cr3_writes: int

    @property
    def roots(self) -> tuple[int, int]:
        return (self.kroot, self.uroot)


@dataclass(frozen=True, slots=True)
class GuestInfo:
    """A parsed snapshot of the info page (field meanings: info.h)."""

    magic: int
    version: int
    size: int
    gen_done: int
    gen_start: int
    state: int
    halt_reason: int
    flags: int
    xen_version: int
    opt_nproc: int
    opt_target: int
    opt_quiet: int
    opt_gap: int
    opt_calls: int
    opt_work: int
    opt_kpti: int
    opt_domctl: int
    opt_selftest_int3: int
    opt_report: int
    opt_rounds: int
    opt_exit: int
    opt_bphalt: int
    opt_inject: int
    opt_user: int
    opt_ucalls: int
    opt_cpuid: int
    opt_msr: int
    nprocs: int
    target_index: int
    kfunc_va: int
    kfunc_gpa: int
    kfunc_insn: bytes
    current_proc: int
    ufunc_va: int
    ufunc_gpa: int
    ufunc_insn: bytes
    cr3_writes: int
    cr3_writes_boot: int
    slices: int
    switches: int
    calls: int
    work: int
    rounds: int
    ucalls: int
    cpuids: int
    msr_writes: int
    checks: int
    mismatches: int
    umismatches: int
    target_mismatches: int
    as_checks: int
    as_mismatches: int
    ev_mismatches: int
    round_checksum: int
    round_checksum_ref: int
    exc_count: int
    last_exc_vector: int
    last_exc_proc: int
    last_exc_rip: int
    last_exc_error: int
    last_exc_cr2: int
    last_exc_cr3: int
    bp_selftest_hits: int
    spurious_irqs: int
    last_exc_cpl: int
    domctl_ret_dom0: int
    domctl_ret_self: int
    domctl_ret_own: int
    own_domid: int
    tsc_khz: int
    tsc_first: int
    tsc_round: int
    tsc_done: int
    cr3_pending: int
    cr3_pending_proc: int
    opt_calls2: int
    kfunc2_va: int
    kfunc2_gpa: int
    kfunc2_insn: bytes
    calls2: int
    mismatches2: int
    opt_tf: int
    dbg_va: int
    dbg_gpa: int
    tf_steps: int
    db_hits: int
    procs: tuple[ProcInfo, ...]

    @property
    def consistent(self) -> bool:
        """True if no update group was in progress when the page was read."""
        return self.gen_done == self.gen_start

    @property
    def seconds(self) -> float | None:
        """Guest-side time from the first slice to the last completed round
        (to ``done`` once finished), if the TSC rate is known (under Xen)."""
        if not self.tsc_khz or not self.tsc_first:
            return None
        end = self.tsc_done or self.tsc_round
        return max(0, end - self.tsc_first) / (self.tsc_khz * 1000.0)

    @property
    def xen(self) -> bool:
        return bool(self.flags & F_XEN)

    @property
    def target(self) -> ProcInfo | None:
        """The target process (index 0), or None with target=0."""
        return None if self.target_index == NO_PROC else self.procs[self.target_index]

    @property
    def busy(self) -> tuple[ProcInfo, ...]:
        """The busy processes, indices 1..nproc."""
        return self.procs[1:]

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, f"unknown({self.state})")

    @property
    def halt_reason_name(self) -> str:
        return HALT_NAMES.get(self.halt_reason, f"unknown({self.halt_reason})")

    def proc_of_cr3(self, cr3: int) -> int | None:
        """Index of the process owning a CR3 value (bit 12 and the PCID/flag
        bits ignored), or None."""
        key = cr3 & 0x000F_FFFF_FFFF_E000
        for p in self.procs:
            if p.kroot == key:
                return p.index
        return None


def parse(page: bytes) -> GuestInfo:
    """Parse one info page.

    Args:
        page: at least INFO_SIZE bytes read at guest-physical INFO_GPA.
    Returns:
        A frozen GuestInfo snapshot.
    Raises:
        ValueError: short buffer, wrong magic, version or size, or a process
            count out of range.
    """
    if len(page) < INFO_SIZE:
        raise ValueError(f"info page: {len(page)} bytes, need {INFO_SIZE}")
    vals = dict(zip((n for n, _ in HEADER_FIELDS), _HEADER.unpack_from(page, 0), strict=True))
    if vals["magic"] != INFO_MAGIC:
        raise ValueError(f"info page: bad magic {vals['magic']:#x} (guest not booted yet?)")
    if vals["version"] != INFO_VERSION:
        raise ValueError(
            f"info page: layout version {vals['version']}, parser knows {INFO_VERSION}"
        )
    if vals["size"] != INFO_SIZE:
        raise ValueError(f"info page: size field {vals['size']}, expected {INFO_SIZE}")
    nprocs = vals["nprocs"]
    if not 0 <= nprocs <= NPROC_MAX:
        raise ValueError(f"info page: nprocs {nprocs} out of range")
    procs = tuple(
        ProcInfo(i, *_PROC.unpack_from(page, PROC_OFFSET + i * PROC_SIZE))
        for i in range(nprocs)
    )
    vals.update(zip((n for n, _ in TAIL_FIELDS), _TAIL.unpack_from(page, TAIL_OFFSET), strict=True))
    for name in ("kfunc", "kfunc2", "ufunc"):
        n = vals.pop(name + "_insn_len")
        vals[name + "_insn"] = vals[name + "_insn"][: min(n, 16)]
    for pad in _PADDING:
        vals.pop(pad)
    return GuestInfo(procs=procs, **vals)


def main() -> None:
    """``python3 guestinfo.py DUMP``: print a dump (e.g. from pmemsave)."""
    import sys

    with open(sys.argv[1], "rb") as f:
        info = parse(f.read(INFO_SIZE))
    for name in GuestInfo.__dataclass_fields__:
        if name != "procs":
            v = getattr(info, name)
            print(f"{name:20} {v.hex() if isinstance(v, bytes) else v}")
    for p in info.procs:
        print(f"proc {p.index:2} kroot={p.kroot:#x} uroot={p.uroot:#x} slices={p.slices} "
              f"calls={p.calls} work={p.work} cr3={p.cr3_writes}")


if __name__ == "__main__":
    main()
