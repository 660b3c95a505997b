"""Boot the test guest under plain QEMU TCG and check its behaviour against
the documented options, from the console and from the info page."""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import guestinfo
from guestinfo import GuestInfo
from hvfg_qemu import Guest, kv

pytestmark = pytest.mark.guest

DEFAULTS = dict(nproc=8, target=1, quiet=1, calls=4, work=16, kpti=1)
USER_DEFAULTS = dict(user=0, ucalls=4)


@dataclass
class Expect:
    """The documented schedule, recomputed independently of the guest."""

    slices: list[int]
    switches: int
    order_tail: list[int]


def schedule_model(nproc: int, target: bool, gap: int, rounds: int) -> Expect:
    slices = [0] * (nproc + 1)
    switches, prev, since, nxt = 0, -1, gap, 0
    order: list[int] = []
    busy_done = 0
    while busy_done < rounds * nproc:
        if target and since >= gap:
            p, since = 0, 0
        else:
            p = 1 + nxt
            nxt = (nxt + 1) % nproc
            since += 1
            busy_done += 1
        slices[p] += 1
        switches += p != prev
        prev = p
        order.append(p)
    return Expect(slices, switches, order[-3:])


def opts(cmdline: str) -> dict[str, int]:
    o = dict(DEFAULTS) | USER_DEFAULTS
    for tok in cmdline.split():
        if tok == "notarget":
            o["target"] = 0
        elif "=" in tok:
            k, v = tok.split("=", 1)
            if v.isdigit():
                o[k] = int(v)
    o.setdefault("gap", o["quiet"] * o["nproc"])
    return o


def check_static(info: GuestInfo) -> None:
    """Relations that hold in every consistent snapshot."""
    assert info.magic == guestinfo.INFO_MAGIC and info.consistent
    assert info.kfunc_va == guestinfo.KFUNC_VA and info.kfunc_gpa == guestinfo.KFUNC_GPA
    assert info.kfunc_insn == guestinfo.KFUNC_INSN
    assert info.kfunc2_va == guestinfo.KFUNC2_VA and info.kfunc2_gpa == guestinfo.KFUNC2_GPA
    assert info.kfunc2_insn == guestinfo.KFUNC2_INSN
    assert info.cr3_writes_boot == 1
    assert info.cr3_writes == info.cr3_writes_boot + sum(p.cr3_writes for p in info.procs)
    assert info.slices == sum(p.slices for p in info.procs)
    assert info.calls == sum(p.calls for p in info.procs)
    assert info.work == sum(p.work for p in info.procs)
    assert info.target_mismatches <= info.mismatches + info.umismatches + info.ev_mismatches
    assert info.as_checks == info.work
    assert info.spurious_irqs == 0
    if info.cr3_pending:
        # a CR3 write announced but not yet counted: its value is a root of
        # the announced process
        assert info.cr3_pending in info.procs[info.cr3_pending_proc].roots
    else:
        assert info.cr3_pending_proc == guestinfo.NO_PROC
    roots = [p.kroot for p in info.procs]
    assert len(set(roots)) == len(roots)
    for p in info.procs:
        assert p.kroot % 0x2000 == 0, "root pair must be 8 KiB aligned"
        assert p.kroot == guestinfo.kroot(p.index)        # fixed, documented addresses
        assert p.uroot == p.kroot | 0x1000, "kernel and user root differ only in bit 12"
        assert info.proc_of_cr3(p.uroot) == p.index


def check_final(info: GuestInfo, cmdline: str, rounds: int) -> None:
    o = opts(cmdline)
    n, gap, c, w, kpti = o["nproc"], o["gap"], o["calls"], o["work"], o["kpti"]
    per_slice_cr3 = 1 + 2 * kpti
    exp = schedule_model(n, bool(o["target"]), gap, rounds)
    check_static(info)
    assert info.state == guestinfo.STATE_DONE
    assert info.halt_reason == guestinfo.HALT_DONE
    assert info.cr3_pending == 0
    assert (info.opt_nproc, info.opt_target, info.opt_gap, info.opt_calls, info.opt_work,
            info.opt_kpti) == (n, o["target"], gap, c, w, kpti)
    assert info.nprocs == n + 1
    assert info.rounds == rounds
    assert [p.slices for p in info.procs] == exp.slices
    assert info.switches == exp.switches
    total = sum(exp.slices)
    assert info.slices == total
    # Exact CR3 accounting: one boot write, then 1 (+2 with KPTI) per slice.
    assert info.cr3_writes == 1 + per_slice_cr3 * total
    for p in info.procs:
        assert p.cr3_writes == per_slice_cr3 * p.slices
        assert p.calls == c * p.slices
        assert p.work == w * p.slices
    assert info.calls == c * total
    if o["user"]:
        u = o["ucalls"]
        assert info.opt_user == 1 and info.opt_ucalls == u
        assert info.ufunc_va == guestinfo.UFUNC_VA and info.ufunc_gpa == guestinfo.UFUNC_GPA
        assert info.ucalls == u * total and info.umismatches == 0
    else:
        assert info.opt_user == 0 and info.ucalls == 0 and info.ufunc_va == 0
    assert info.checks == total
    assert info.mismatches == 0 and info.as_mismatches == 0 and info.target_mismatches == 0
    assert info.ev_mismatches == 0
    assert info.cpuids == o.get("cpuid", 0) * total and info.msr_writes == o.get("msr", 0) * total
    assert info.calls2 == o.get("calls2", 0) * total and info.mismatches2 == 0
    tf = o.get("tf", 0)
    assert info.tf_steps == (2 * tf + 3 if tf else 0) * total
    assert info.db_hits == info.tf_steps          # without a monitor every #DB reaches the guest
    assert info.round_checksum == info.round_checksum_ref
    assert info.exc_count == 0 and info.bp_selftest_hits == 0
    # guest-side time: TSC at the first slice <= last round == done; no rate
    # without Xen
    assert 0 < info.tsc_first <= info.tsc_round == info.tsc_done
    assert info.tsc_khz == 0 and info.seconds is None
    if o["target"]:
        # documented: busy slices = R*N, target slices = ceil(R*N / gap)
        assert info.procs[0].slices == math.ceil(rounds * n / gap)
        assert info.target_index == 0
    else:
        assert info.procs[0].slices == 0 and info.target_index == guestinfo.NO_PROC


def test_banner_and_progress(boot) -> None:
    g: Guest = boot("report=200")
    banner = g.wait_line(r"^HVFG boot ")[0]
    assert f"info_gpa={guestinfo.INFO_GPA:#x}" in banner and "xen=0" in banner
    assert f"boot_cr3={guestinfo.BOOT_CR3:#x}" in banner
    o = kv(g.wait_line(r"^HVFG options ")[0])
    assert {k: int(o[k]) for k in DEFAULTS} == DEFAULTS
    assert int(o["gap"]) == 8 and o["kpti"] == "1"
    k = kv(g.wait_line(r"^HVFG kfunc ")[0])
    assert int(k["va"], 16) == guestinfo.KFUNC_VA and int(k["gpa"], 16) == guestinfo.KFUNC_GPA
    assert k["insn"] == "488d84fe95e9d15b" and k["intact"] == "1"
    assert len(g.wait_line(r"^HVFG proc \d+ kroot=")) == 9

    prog = g.wait_line(r"^HVFG progress ", count=3)
    tgt = g.wait_line(r"^HVFG target ", count=3)
    rounds = []
    for line in prog[:3]:
        v = {a: int(b) for a, b in kv(line).items()}
        rounds.append(v["round"])
        assert v["round"] % 200 == 0
        assert v["slices"] == 9 * v["round"]          # 8 busy + target every round
        assert v["switches"] == v["slices"]
        assert v["cr3"] == 1 + 3 * v["slices"]
        assert v["calls"] == 4 * v["slices"] and v["work"] == 16 * v["slices"]
        assert v["checks"] == v["slices"]
        assert v["mismatch"] == 0 and v["as_mismatch"] == 0 and v["exc"] == 0
    assert rounds == sorted(set(rounds))
    for line in tgt[:3]:
        v = {a: int(b) for a, b in kv(line).items()}
        assert v["share_ppm"] == 111111                # 1/9
        assert v["cr3"] == 3 * v["slices"] and v["calls"] == 4 * v["slices"]
    assert not g.lines("HVFG EXCEPTION") and not g.lines("HVFG warning")


@pytest.mark.parametrize(
    ("cmdline", "rounds", "share"),
    [
        ("nproc=8 quiet=1", 50, 1 / 9),         # plain round robin over 9
        ("nproc=8 gap=7", 70, 1 / 8),           # 12.5 %
        ("nproc=8 gap=99", 99, 1 / 100),        # 1 %
        ("nproc=8 quiet=12", 96, None),         # gap 96: 1/97
        ("nproc=8 gap=999", 999, 1 / 1000),     # 0.1 %
        ("nproc=3 kpti=0 calls=2 work=5", 40, 1 / 4),
        ("nproc=1 gap=3 calls=1 work=0", 30, 1 / 4),
        ("nproc=4 notarget calls=0", 20, 0.0),
        ("nproc=3 user=1 ucalls=3", 40, 1 / 4),
        ("nproc=8 user=1 kpti=0 gap=7 work=3", 14, 1 / 8),
        ("nproc=2 cpuid=3 msr=2", 10, 1 / 3),
        ("nproc=3 calls2=2 calls=1", 12, 1 / 4),
        ("nproc=2 tf=5 user=1", 10, 1 / 3),
    ],
)
def test_exact_counts(boot, cmdline: str, rounds: int, share: float | None) -> None:
    full = f"{cmdline} rounds={rounds} report=0"
    g = boot(full)
    info = g.wait_done()
    check_final(info, full, rounds)
    if share is not None:
        assert info.procs[0].slices / info.slices == pytest.approx(share, abs=1e-12)
        assert info.procs[0].calls / max(info.calls, 1) == pytest.approx(
            share if info.calls else 0.0, abs=1e-12)
    g.wait_line(r"^HVFG done ")  # printed just after state=done is published


def test_stays_stopped_when_done(boot) -> None:
    """After rounds= the guest blocks with interrupts enabled (so Xen keeps it
    'blocked' instead of powering it off): nothing may change any more."""
    g = boot("nproc=2 rounds=3 report=0")
    done = g.wait_done()
    later = [g.wait_info("snapshot", lambda i: True) for _ in range(5)]
    assert all(i == done for i in later)
    assert g.proc.poll() is None


@pytest.mark.parametrize("extra", ["", "user=1"])
def test_live_snapshots_are_consistent_and_advance(boot, extra: str) -> None:
    """Read the running guest from outside, as a VMI tool would."""
    g = boot(f"nproc=5 calls=3 work=7 report=0 {extra}")
    first = g.wait_info("running", lambda i: i.state == guestinfo.STATE_RUNNING and i.rounds > 0)
    seen = [first]
    while len(seen) < 5:
        seen.append(g.wait_info("progress", lambda i: i.gen_done > seen[-1].gen_done))
    for info in seen:
        check_static(info)
        cur = info.current_proc
        for p in info.procs:
            if p.index == cur:
                # inside a slice: 1..3 of its CR3 writes and 0..C calls done
                assert 3 * p.slices - 2 <= p.cr3_writes <= 3 * p.slices
                assert 3 * (p.slices - 1) <= p.calls <= 3 * p.slices
            else:
                assert p.cr3_writes == 3 * p.slices and p.calls == 3 * p.slices
        assert info.mismatches == 0 and info.exc_count == 0
    assert seen[-1].rounds > first.rounds and seen[-1].cr3_writes > first.cr3_writes


@pytest.mark.parametrize("mode", ["1", "bad"])
def test_selftest_int3(boot, mode: str) -> None:
    """The guest plants int3 on its own kernel function and emulates the
    original instruction out of line: the self-check passes with the right
    instruction and catches a wrong one."""
    g = boot(f"selftest_int3={mode} rounds=30 report=0")
    info = g.wait_done()
    expect_mode = guestinfo.SELFTEST_GOOD if mode == "1" else guestinfo.SELFTEST_BAD
    assert info.opt_selftest_int3 == expect_mode
    assert info.slices == 30 * 9 and info.calls == 4 * info.slices
    assert info.bp_selftest_hits == info.calls
    assert info.exc_count == 0 and info.checks == info.slices
    if mode == "1":
        assert info.mismatches == 0
        assert info.round_checksum == info.round_checksum_ref
    else:
        assert info.mismatches == info.checks
        assert info.target_mismatches == info.procs[0].slices
        assert info.round_checksum != info.round_checksum_ref


@pytest.mark.parametrize("mode", ["1", "bad"])
def test_selftest_int3_rip_relative(boot, mode: str) -> None:
    """kfunc2 starts with a RIP-relative load: executed out of line it needs
    its displacement relocated.  The good trampoline does that; the bad one
    copies the bytes unchanged (the classic emulation bug) and every slice
    mismatches."""
    g = boot(f"calls2=3 calls=1 selftest_int3={mode} rounds=20 report=0")
    info = g.wait_done()
    assert info.calls2 == 3 * info.slices and info.calls == info.slices
    assert info.bp_selftest_hits == info.calls + info.calls2
    assert info.exc_count == 0
    if mode == "1":
        assert info.mismatches2 == 0 and info.mismatches == 0
    else:
        assert info.mismatches2 == info.slices
        assert info.target_mismatches == info.procs[0].slices


def test_reinjected_bp_at_kfunc2_recovers(boot) -> None:
    g = boot("calls2=2 inject=k2bp nproc=2 rounds=3 report=0")
    info = g.wait_done()
    assert info.state == guestinfo.STATE_DONE
    assert info.calls2 == 2 * 9 and info.exc_count == 2 * 6
    assert info.last_exc_rip == guestinfo.KFUNC2_VA + 1 and info.last_exc_cpl == 0
    assert info.mismatches2 == 0
    g.wait_line(r"reinjected #BP at kfunc2: recovered via trampoline")


@pytest.mark.parametrize("mode", ["1", "bad"])
def test_selftest_int3_user(boot, mode: str) -> None:
    """The same with user=1: int3 on both the kernel and the ring-3 function."""
    g = boot(f"user=1 selftest_int3={mode} rounds=20 report=0")
    info = g.wait_done()
    assert info.slices == 20 * 9 and info.calls == 4 * info.slices
    assert info.ucalls == 4 * info.slices
    assert info.bp_selftest_hits == info.calls + info.ucalls
    assert info.exc_count == 0
    if mode == "1":
        assert info.mismatches == 0 and info.umismatches == 0
    else:
        assert info.mismatches == info.slices and info.umismatches == info.slices
        assert info.target_mismatches == info.procs[0].slices


def test_reinjected_bp_at_ufunc_recovers(boot) -> None:
    """A user-mode int3 that reaches the guest: recorded with its CPL-3 RIP
    and the process's user root, then survived."""
    g = boot("user=1 inject=ubp nproc=2 ucalls=2 rounds=3 report=0")
    info = g.wait_done()
    assert info.state == guestinfo.STATE_DONE
    assert info.ucalls == 2 * 9 and info.exc_count == 2 * 6
    assert info.last_exc_vector == 3 and info.last_exc_rip == guestinfo.UFUNC_VA + 1
    assert info.last_exc_cpl == 3
    assert info.ufunc_insn == guestinfo.UFUNC_INSN
    assert info.last_exc_cr3 == info.procs[info.last_exc_proc].uroot
    assert info.mismatches == 0 and info.umismatches == 0
    line = g.wait_line(r"^HVFG EXCEPTION vector=3 ")[0]
    assert "cpl=3" in line
    g.wait_line(r"reinjected #BP at ufunc: recovered via trampoline")


@pytest.mark.parametrize(
    ("inject", "vector"),
    [("ud", 6), ("gp", 13), ("pf", 14), ("bp", 3)],
)
def test_fatal_exception_is_recorded(boot, inject: str, vector: int) -> None:
    g = boot(f"inject={inject} nproc=3 report=0")
    info = g.wait_done()
    assert info.state == guestinfo.STATE_HALTED
    assert info.halt_reason == guestinfo.HALT_EXCEPTION
    assert info.exc_count == 1 and info.last_exc_vector == vector
    assert info.last_exc_proc == 3          # the last busy process of round 1
    assert info.last_exc_cr3 in info.procs[3].roots
    assert info.rounds == 1
    if inject == "pf":
        assert info.last_exc_cr2 == 0x200000
    line = g.wait_line(r"^HVFG EXCEPTION ")[0]
    assert f"vector={vector} " in line and "proc=3" in line
    g.wait_line(r"^HVFG HALTED reason=exception")


def test_reinjected_bp_at_kfunc_recovers(boot) -> None:
    """An int3 left at the kernel function that reaches the guest (what a
    reinjected VMI breakpoint looks like) is counted and survived."""
    g = boot("inject=kbp nproc=2 rounds=4 report=0")
    info = g.wait_done()
    assert info.state == guestinfo.STATE_DONE
    # after round 1 (3 slices) every call traps: 3 more rounds of 3 slices x 4 calls
    assert info.calls == 4 * 12 and info.exc_count == 4 * 9
    assert info.last_exc_vector == 3 and info.last_exc_rip == guestinfo.KFUNC_VA + 1
    assert info.mismatches == 0 and info.round_checksum == info.round_checksum_ref
    g.wait_line(r"recovered via trampoline")


def test_reinjected_bp_with_bphalt(boot) -> None:
    g = boot("inject=kbp bphalt=1 nproc=2 report=0")
    info = g.wait_done()
    assert info.state == guestinfo.STATE_HALTED and info.halt_reason == guestinfo.HALT_BP
    assert info.exc_count == 1 and info.last_exc_vector == 3
    assert info.last_exc_proc == 0          # the target runs first in round 2
    g.wait_line(r"^HVFG HALTED reason=bp-at-kfunc")


def test_domctl_without_xen_is_skipped(boot) -> None:
    g = boot("domctl=1 rounds=2 report=0")
    info = g.wait_done()
    assert not info.xen and info.opt_domctl == 1
    assert not info.flags & guestinfo.F_DOMCTL_DONE
    g.wait_line(r"^HVFG domctl skipped reason=no-xen")


@pytest.mark.parametrize(("extra", "status"), [("", 1), ("selftest_int3=bad", 3)])
def test_exit_status(boot, extra: str, status: int) -> None:
    """exit=1 leaves QEMU through isa-debug-exit: 1 = all good, 3 = not."""
    g = boot(f"{extra} exit=1 rounds=5 report=0")
    assert g.wait_exit() == status
    assert g.lines("HVFG done rounds=5 ")


def test_bad_options_are_reported_and_clamped(boot) -> None:
    g = boot("nproc=1000 quiet=0 kpti=x bogus=1 selftest_int3=maybe rounds=1 report=0")
    info = g.wait_done()
    assert info.opt_nproc == guestinfo.NPROC_BUSY_MAX and info.nprocs == guestinfo.NPROC_MAX
    assert info.opt_quiet == 1 and info.opt_kpti == 1 and info.opt_selftest_int3 == 0
    warnings = g.lines("HVFG warning")
    assert len(warnings) == 5, warnings
    check_final(info, f"nproc={guestinfo.NPROC_BUSY_MAX} rounds=1", 1)


def mov_to_cr3_sites(elf: Path) -> list[tuple[int, str]]:
    """Addresses and source registers of the 64-bit mov-to-CR3 instructions
    (the boot code's 32-bit one excluded)."""
    out = subprocess.run(["objdump", "-d", str(elf)], check=True, capture_output=True,
                         text=True).stdout
    sites = []
    for m in re.finditer(r"^\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*mov\s+%(\w+),%cr3\s*$",
                         out, re.M):
        addr = int(m.group(1), 16)
        if addr >= guestinfo.KFUNC_VA:
            sites.append((addr, m.group(2)))
    return sites


def test_page_is_consistent_at_trap_points(boot, guest_elf: Path) -> None:
    """A monitor reads the info page while the vCPU sits on the trapping
    instruction (a CR3 write, the breakpoint at kfunc): the page must be
    consistent there, with the CR3 write already counted and announced in
    cr3_pending, and the kfunc call not yet counted.  QEMU's gdbstub plays the monitor."""
    g = boot("nproc=3 calls=3 report=0")
    g.wait_line(r"^HVFG running")
    gdb = g.gdb()                       # stops the guest
    assert gdb.stop_reason().startswith("T")

    def page() -> GuestInfo:
        return guestinfo.parse(gdb.read(guestinfo.INFO_VA, guestinfo.INFO_SIZE))

    gdb.set_bp(guestinfo.KFUNC_VA)
    for _ in range(8):
        gdb.cont()
        regs = gdb.regs()
        assert regs["rip"] == guestinfo.KFUNC_VA
        info = page()
        check_static(info)
        p = info.procs[regs["rdi"]]          # kfunc's first argument: the caller
        assert info.current_proc == p.index
        assert 3 * (p.slices - 1) <= p.calls < 3 * p.slices   # this call not counted yet
    gdb.clear_bp(guestinfo.KFUNC_VA)

    sites = mov_to_cr3_sites(guest_elf)
    assert len(sites) == 3, sites                        # K, U, K of a slice (inlined)
    for addr, _ in sites:
        gdb.set_bp(addr)
    seen = set()
    for _ in range(12):
        gdb.cont()
        regs = gdb.regs()
        reg = dict(sites)[regs["rip"]]
        seen.add(regs["rip"])
        info = page()
        check_static(info)
        assert info.cr3_pending == regs[reg] != 0        # announced and counted ...
        owner = info.procs[info.cr3_pending_proc]
        assert info.cr3_pending in owner.roots
        assert info.current_proc == owner.index          # ... with its slice
        assert 3 * (owner.slices - 1) < owner.cr3_writes <= 3 * owner.slices
    assert seen == {a for a, _ in sites}


def test_too_little_memory_is_refused(boot) -> None:
    """The info page (16 MiB) must be RAM: with 16 MiB the guest says so
    instead of faulting."""
    g = boot("rounds=1", mem_mb=16)
    line = g.wait_line(r"^HVFG FATAL ")[0]
    assert "not RAM" in line and "17 MiB" in line
    assert not g.lines("HVFG running")
