"""Malformed input through the real hypercall: the documented errno, no change.

Needs XEN_VARIANT=patched.  Every call goes through ``hvfilter._lowlevel``
(the shim's operations, or ``raw_op`` with a hand-made payload union), so
nothing in Python or the shim refuses it first: Xen's handler and the
evaluator's ``hvf_table_check`` do.

1. A guest is created paused with ``rounds=N``; LibVMI subscribes to CR3
   writes; a good table (the process-bound CR3 rules, one set) is installed
   and a breakpoint registered.  Snapshot: get_info (generation, nr_rules,
   nr_sets, nr_breakpoints, mem_bytes) and the statistics.
2. Every bad call returns its errno from the header's list; the snapshot is
   identical afterwards.
3. The guest runs to its quiet end: the filter still forwards exactly the
   target's ins and outs of the guest's schedule (so the table and the set
   survived), LibVMI receives exactly those.
4. With non-zero statistics now, every bad call again: nothing changes.
5. The set still holds exactly the target's root.

The simulator (the shim's model of the handler, with the same evaluator)
gets every call too, after the same good installation, and must answer
with the same errno; tables are also run through ``hvf_table_check``
directly.  One case, an unreadable handle (-EFAULT), runs on Xen only: the
simulator would dereference the pointer.
"""

from __future__ import annotations

import errno
import json
import struct
import subprocess
import sys
from typing import Any, Callable, Optional

import attrs
import guestinfo
from cr3run import PROCESS_MASK, listen_until_done, schedule, stop_events, transitions
from hvlab import Context, log

TIMEOUT = 420
ROUNDS = 200
NPROC = 4
GUEST_CMDLINE = f"nproc={NPROC} quiet=1 calls=2 work=16 kpti=1 rounds={ROUNDS}"
CAPACITY = 8
BP_GPA = guestinfo.KFUNC2_GPA

OP_GET_INFO, OP_TABLE, OP_SET_ADD, OP_SET_REMOVE, OP_SET_FLUSH = 0, 1, 2, 3, 4
OP_BP_ADD, OP_BP_REMOVE, OP_STATS_GET, OP_STATS_RESET = 5, 6, 7, 8
ABI = 0x0001_0000


def _table_u(nr_rules: int = 0, nr_sets: int = 0, nr_keys: int = 0, pad: int = 0,
             rules: int = 0, sets: int = 0, keys: int = 0) -> bytes:
    return struct.pack("<IIIIQQQ", nr_rules, nr_sets, nr_keys, pad, rules, sets, keys)


def _set_u(set_id: int = 0, nr_keys: int = 0, keys: int = 0) -> bytes:
    return struct.pack("<IIQ", set_id, nr_keys, keys)


def _bp_u(gpa: int, insn_len: int, insn: bytes, pad: bytes = bytes(7)) -> bytes:
    return struct.pack("<QB", gpa, insn_len) + pad + insn.ljust(16, b"\0")


def _tail(u: bytes, at: int) -> bytes:
    b = bytearray(u.ljust(64, b"\0"))
    b[at] = 1
    return bytes(b)


def cli_views(ctx: Context, domid: int, ctl: Any) -> None:
    """``hvfilter rules`` / ``hvfilter stats`` in dom0 against this domain agree with Xen."""
    def cli(*args: str) -> tuple[int, str]:
        p = subprocess.run([sys.executable, "-m", "hvfilter", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
        return p.returncode, p.stdout

    info, st = ctl.get_info(domid), ctl.stats_get(domid)
    rc_r, out_r = cli("rules", str(domid), "--json")
    rc_s, out_s = cli("stats", str(domid), "--json")
    rc_t, text = cli("stats", str(domid))
    rc_rt, rules_text = cli("rules", str(domid))
    ctx.data["cli"] = {"rules_text": rules_text.splitlines(), "stats_text": text.splitlines()}
    for line in rules_text.splitlines() + text.splitlines():
        log(f"cli| {line}")
    ok = rc_r == rc_s == rc_t == rc_rt == 0
    ctx.check("hvfilter rules/stats DOMAIN exit 0 in dom0", ok, rc=[rc_r, rc_s, rc_t, rc_rt],
              out=(out_r + out_s)[-1500:])
    if not ok:
        return
    r, v = json.loads(out_r), json.loads(out_s)
    ctx.check("hvfilter rules --json reports Xen's table (generation, rules, sets, breakpoints)",
              r["backend"] == "xen" and (r["generation"], r["nr_rules"], r["nr_sets"], r["nr_breakpoints"])
              == (info.generation, info.nr_rules, info.nr_sets, info.nr_breakpoints)
              and [x["seen"] for x in r["rules"]] == [c.seen for c in st.rules],
              cli=[r["generation"], r["nr_rules"], r["nr_sets"], r["nr_breakpoints"]],
              xen=[info.generation, info.nr_rules, info.nr_sets, info.nr_breakpoints])
    ctx.check("hvfilter stats --json reports Xen's counters, conserved",
              v["kinds"]["CR3_WRITE"]["seen"] == st.kinds[1].seen
              and v["kinds"]["CR3_WRITE"]["forwarded"] == st.kinds[1].forwarded
              and [x["forwarded"] for x in v["rules"]] == [c.forwarded for c in st.rules]
              and v["conserved"] and v["rules_add_up"],
              cli=v["kinds"].get("CR3_WRITE"), conserved=v["conserved"], rules_add_up=v["rules_add_up"])
    ctx.check("the text views name what Xen does not report and the conservation check",
              "not returned" in rules_text and "conservation" in text and "holds" in text)


def run(ctx: Context) -> None:
    if ctx.variant != "patched":
        ctx.require("runs on the patched hypervisor (XEN_VARIANT=patched)", False, variant=ctx.variant)
    from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode, X86Reg
    from libvmi.event import RegAccess, RegEvent

    import hvfilter as hv
    from hvfilter import NEW, OLD, Kind, _binding, forward, on, pass_
    from hvfilter._lowlevel import ShimControl
    from hvfilter._raw import RawCond, RawRule, RawSet, RawTable
    from hvfilter.errors import HvfilterError

    target = hv.process("target", guestinfo.kroot(0), capacity=CAPACITY)
    good: RawTable = hv.compile([
        on(Kind.CR3_WRITE).when(NEW.in_(target) ^ OLD.in_(target)).then(forward),
        on(Kind.CR3_WRITE).then(pass_),
    ]).table
    r0 = good.rules[0]
    ctx.data["good_table"] = {"rules": len(good.rules), "sets": len(good.sets),
                              "conds": [r.nr_conds for r in good.rules]}

    def rule(i: int, **kw: Any) -> RawTable:
        rules = list(good.rules)
        rules[i] = attrs.evolve(rules[i], **kw)
        return attrs.evolve(good, rules=tuple(rules))

    def cond(i: int, j: int, **kw: Any) -> RawTable:
        conds = list(good.rules[i].conds)
        conds[j] = attrs.evolve(conds[j], **kw)
        return rule(i, conds=tuple(conds))

    def set_(i: int, **kw: Any) -> RawTable:
        sets = list(good.sets)
        sets[i] = attrs.evolve(sets[i], **kw)
        return attrs.evolve(good, sets=tuple(sets))

    eq_new = RawCond(field=4, cmp=0, mask=(1 << 64) - 1, value=0)
    nine_by_eight = RawTable(rules=tuple(RawRule(kinds=1 << 1, action=0, nr_conds=8, conds=(eq_new,) * 8)
                                         for _ in range(9)))
    tables: list[tuple[str, RawTable, int]] = [
        ("unknown kind (bit 12)", rule(0, kinds=1 << 12), errno.EINVAL),
        ("no kind", rule(0, kinds=0), errno.EINVAL),
        ("unknown field (10)", cond(0, 0, field=10), errno.EINVAL),
        ("unknown operator (4)", cond(0, 0, cmp=4), errno.EINVAL),
        ("unknown condition flag", cond(0, 0, flags=2), errno.EINVAL),
        ("unknown action (4)", rule(0, action=4), errno.EINVAL),
        ("non-zero pad0 in a rule", rule(0, pad0=1), errno.EINVAL),
        ("non-zero pad1 in a rule", rule(0, pad1=1), errno.EINVAL),
        ("non-zero pad in a condition", cond(0, 0, pad=1), errno.EINVAL),
        ("non-zero unused condition", rule(0, conds=r0.conds + (RawCond(field=1),)), errno.EINVAL),
        ("non-zero pad in a set", set_(0, pad=1), errno.EINVAL),
        ("IN_SET on set 1 (one set declared)", cond(0, 0, set_id=1), errno.EINVAL),
        ("IN_SET on set 200", cond(0, 0, set_id=200), errno.EINVAL),
        ("ANY_BITS on CPL", rule(0, nr_conds=1, conds=(RawCond(field=3, cmp=2, mask=3),)), errno.EINVAL),
        ("EQ value outside its mask", rule(0, nr_conds=1, conds=(RawCond(field=4, cmp=0, mask=0xF000,
                                                                         value=0x1),)), errno.EINVAL),
        ("empty set name", set_(0, name=b""), errno.EINVAL),
        ("unterminated set name", set_(0, name=b"x" * 16), errno.EINVAL),
        ("set mask 0", set_(0, mask=0), errno.EINVAL),
        ("set capacity 0", set_(0, capacity=0), errno.EINVAL),
        ("set capacity 4097 (oversize)", set_(0, capacity=4097), errno.E2BIG),
        ("nr_init > capacity", attrs.evolve(set_(0, capacity=1, nr_init=2),
                                            keys=good.keys + (guestinfo.kroot(1),)), errno.EINVAL),
        ("nr_keys != sum of nr_init", attrs.evolve(good, keys=good.keys + (guestinfo.kroot(1),)), errno.EINVAL),
        ("SAMPLE with sample 0", rule(len(good.rules) - 1, action=3, sample=0), errno.EINVAL),
        ("sample set on PASS", rule(len(good.rules) - 1, sample=5), errno.EINVAL),
        ("EMULATE on CR3 writes", rule(len(good.rules) - 1, action=2), errno.EINVAL),
        ("EMULATE with fallback EMULATE", RawTable(rules=(RawRule(kinds=1 << 5, action=2, fallback=2),)),
         errno.EINVAL),
        ("9 conditions in a rule", rule(0, nr_conds=9), errno.E2BIG),
        ("72 conditions in a table (9 x 8)", nine_by_eight, errno.E2BIG),
    ]

    g = ctx.create_guest(GUEST_CMDLINE, paused=True)
    domid = g.domid
    assert domid is not None
    xen = ShimControl.open_xen()
    kinds = xen.get_info(domid).kinds
    if not kinds & (1 << 6):
        tables.append(("a kind this CPU cannot raise (SINGLESTEP)", RawTable(rules=(RawRule(kinds=1 << 6, action=1),)),
                       errno.EOPNOTSUPP))
    sim = ShimControl.open_sim(0, 0, kinds, False, False, 1)
    sim.sim_domain_create(domid, 1, True)

    # Calls: (name, fn(ctl, domid), errno, on the simulator too)
    Call = tuple[str, Callable[[ShimControl, int], object], int, bool]
    calls: list[Call] = []
    for name, t, e in tables:
        calls.append((f"table_replace: {name}", lambda c, d, t=t: c.table_replace(d, t), e, True))
    raw: list[tuple[str, int, bytes, Optional[int], int]] = [
        ("table_replace: 65 rules", OP_TABLE, _table_u(nr_rules=65), None, errno.E2BIG),
        ("table_replace: 9 sets", OP_TABLE, _table_u(nr_sets=9), None, errno.E2BIG),
        ("table_replace: non-zero table pad", OP_TABLE, _table_u(pad=1), None, errno.EINVAL),
        ("table_replace: non-zero op union tail", OP_TABLE, _tail(_table_u(), 40), None, errno.EINVAL),
        ("set_add: non-zero op union tail", OP_SET_ADD, _tail(_set_u(0, 1, 0), 16), None, errno.EINVAL),
        ("set_flush: non-zero op union tail", OP_SET_FLUSH, _tail(_set_u(), 63), None, errno.EINVAL),
        ("bp_add: non-zero op union tail", OP_BP_ADD, _tail(_bp_u(0x5000, 1, b"\x90"), 32), None, errno.EINVAL),
        ("stats_get: non-zero op union tail", OP_STATS_GET, _tail(struct.pack("<Q", 0), 8), None, errno.EINVAL),
        ("stats_reset with a non-null buffer", OP_STATS_RESET, struct.pack("<Q", 0x1000), None, errno.EINVAL),
        ("stats_reset: non-zero op union tail", OP_STATS_RESET, _tail(b"", 8), None, errno.EINVAL),
        ("unknown op 9", 9, b"", None, errno.EINVAL),
        ("table_replace with abi major 2", OP_TABLE, _table_u(), 0x0002_0000, errno.EPROTONOSUPPORT),
        ("stats_reset with abi major 0", OP_STATS_RESET, b"", 0x0000_0001, errno.EPROTONOSUPPORT),
        ("set_add with nr_keys 0", OP_SET_ADD, _set_u(0, 0, 0), None, errno.EINVAL),
        ("set_add with nr_keys 4097", OP_SET_ADD, _set_u(0, 4097, 0), None, errno.EINVAL),
        ("set_remove with nr_keys 0", OP_SET_REMOVE, _set_u(0, 0, 0), None, errno.EINVAL),
        ("set_flush with nr_keys 1", OP_SET_FLUSH, _set_u(0, 1, 0), None, errno.EINVAL),
        ("set_flush with a keys handle", OP_SET_FLUSH, _set_u(0, 0, 0x1000), None, errno.EINVAL),
        ("bp_add with insn_len 0", OP_BP_ADD, _bp_u(0x5000, 0, b""), None, errno.EINVAL),
        ("bp_add with insn_len 16", OP_BP_ADD, _bp_u(0x5000, 16, b"\x90" * 16), None, errno.EINVAL),
        ("bp_add with insn[0] = 0xcc", OP_BP_ADD, _bp_u(0x5000, 1, b"\xcc"), None, errno.EINVAL),
        ("bp_add with bytes past insn_len", OP_BP_ADD, _bp_u(0x5000, 1, b"\x90\x90"), None, errno.EINVAL),
        ("bp_add with non-zero pad", OP_BP_ADD, _bp_u(0x5000, 1, b"\x90", pad=b"\0\0\0\1\0\0\0"), None,
         errno.EINVAL),
        ("bp_remove with instruction bytes", OP_BP_REMOVE, _bp_u(BP_GPA, 1, b"\x90"), None, errno.EINVAL),
    ]
    for name, op, u, abi, e in raw:
        calls.append((name, lambda c, d, op=op, u=u, abi=abi: c.raw_op(d, op, u, abi), e, True))
    calls += [
        ("table_replace: unreadable rules handle", lambda c, d: c.raw_op(d, OP_TABLE, _table_u(
            nr_rules=1, rules=0x1000)), errno.EFAULT, False),
        ("set_add on a missing set (5)", lambda c, d: c.set_keys(d, 5, [guestinfo.kroot(1)], False),
         errno.ENOENT, True),
        ("set_remove on a missing set (5)", lambda c, d: c.set_keys(d, 5, [guestinfo.kroot(0)], True),
         errno.ENOENT, True),
        ("set_flush on a missing set (5)", lambda c, d: c.set_flush(d, 5), errno.ENOENT, True),
        ("set_remove of a present and an absent key (all or nothing)",
         lambda c, d: c.set_keys(d, 0, [guestinfo.kroot(0), guestinfo.kroot(3)], True), errno.ENOENT, True),
        (f"set_add beyond the capacity ({CAPACITY} new keys)",
         lambda c, d: c.set_keys(d, 0, [0x1000_0000 + 0x2000 * i for i in range(CAPACITY)], False),
         errno.ENOSPC, True),
        ("bp_add where a breakpoint is registered", lambda c, d: c.bp_add(d, BP_GPA, guestinfo.KFUNC2_INSN),
         errno.EEXIST, True),
        ("bp_remove where none is registered", lambda c, d: c.bp_remove(d, BP_GPA + 0x10), errno.ENOENT, True),
        ("table_replace on dom0", lambda c, d: c.table_replace(0, good), errno.EPERM, True),
        ("table_replace on a domain that does not exist", lambda c, d: c.table_replace(0x7000, good),
         errno.ESRCH, True),
    ]

    def errno_of(ctl: ShimControl, fn: Callable[[ShimControl, int], object]) -> int:
        try:
            fn(ctl, domid)
        except HvfilterError as ex:
            return ex.errno or -1
        return 0

    def snapshot(ctl: ShimControl) -> dict[str, Any]:
        i = ctl.get_info(domid)
        st = ctl.stats_get(domid)
        return {"generation": i.generation, "nr_rules": i.nr_rules, "nr_sets": i.nr_sets,
                "nr_breakpoints": i.nr_breakpoints, "mem_bytes": i.mem_bytes, "stats": attrs.asdict(st)}

    def bad_batch(label: str) -> None:
        before = snapshot(xen)
        wrong = []
        for name, fn, want, _on_sim in calls:
            got = errno_of(xen, fn)
            if got != want:
                wrong.append({"case": name, "errno": got, "expected": want})
        after = snapshot(xen)
        ctx.data[f"{label}_calls"] = len(calls)
        ctx.check(f"{label}: every bad call returns its documented errno ({len(calls)} calls)", not wrong,
                  wrong=wrong)
        diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        ctx.check(f"{label}: info and statistics identical after the bad calls", not diff,
                  diff=str(diff)[:2000], generation=after["generation"], mem_bytes=after["mem_bytes"])
        ctx.data[f"{label}_snapshot"] = {k: v for k, v in after.items() if k != "stats"}

    events: list[tuple[int, int]] = []

    def on_cr3(_vmi: Any, e: Any) -> None:
        events.append((e.previous, e.value))

    vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
    ev = RegEvent(X86Reg.CR3, RegAccess.W, on_cr3)
    registered = False
    try:
        vmi.register_event(ev)
        registered = True
        for ctl in (xen, sim):
            ctl.table_replace(domid, good)
            ctl.bp_add(domid, BP_GPA, guestinfo.KFUNC2_INSN)
        bad_batch("paused")
        rc, u = _binding.op_raw(xen.handle, domid, OP_GET_INFO, 0x0002_0000, b"")
        theirs = struct.unpack_from("<I", u)[0]
        ctx.check("get_info with abi major 2: -EPROTONOSUPPORT, and Xen still tells its version",
                  rc == -errno.EPROTONOSUPPORT and theirs == ABI, rc=rc, abi_version=hex(theirs))

        g.unpause()
        secs = listen_until_done(vmi, 300, f"the guest's {ROUNDS} rounds")
        stop_events(vmi, ev)
        registered = False
        buf, _ = vmi.read_pa(guestinfo.INFO_GPA, guestinfo.INFO_SIZE)
        final = guestinfo.parse(buf)
        seq = schedule(NPROC + 1, final.slices)
        model = [(o & PROCESS_MASK, n & PROCESS_MASK) for o, n in transitions(seq)]
        got = [(o & PROCESS_MASK, n & PROCESS_MASK) for o, n in events]
        c = xen.stats_get(domid).kinds[1]
        log(f"{final.cr3_writes} CR3 writes in {secs:.1f} s; filter saw {c.seen}, forwarded {c.forwarded}, "
            f"model {len(model)}, LibVMI {len(events)}")
        ctx.data.update(guest_cr3_writes=final.cr3_writes, filter_seen=c.seen, filter_forwarded=c.forwarded,
                        filter_passed=c.passed, expected_forwarded=len(model), libvmi_events=len(events))
        ctx.check("the guest finished its rounds", final.state == guestinfo.STATE_DONE and final.consistent
                  and final.rounds == ROUNDS, state=final.state_name)
        ctx.check("the model has the guest's number of CR3 writes", len(seq) == final.cr3_writes,
                  model=len(seq), guest=final.cr3_writes)
        ctx.check("after the bad calls the filter saw every CR3 write", c.seen == final.cr3_writes,
                  seen=c.seen, guest=final.cr3_writes)
        ctx.check("after the bad calls the filter forwarded exactly the target's ins and outs",
                  c.forwarded == len(model), forwarded=c.forwarded, expected=len(model))
        ctx.check("LibVMI received exactly the model's transitions, in order", got == model,
                  libvmi=len(got), model=len(model))

        bad_batch("after_run")
        cli_views(ctx, domid, xen)
        # The set holds exactly the target's root: removing it works once.
        xen.set_keys(domid, 0, [guestinfo.kroot(0)], True)
        second = errno_of(xen, lambda c, d: c.set_keys(d, 0, [guestinfo.kroot(0)], True))
        ctx.check("the set still held the target's root (removed once, then -ENOENT)",
                  second == errno.ENOENT, errno=second)

        # One source of truth: the simulator's handler and hvf_table_check agree.
        sim_wrong = []
        for name, fn, want, on_sim in calls:
            if on_sim and (got_e := errno_of(sim, fn)) != want:
                sim_wrong.append({"case": name, "errno": got_e, "expected": want})
        ctx.check("the simulator answers every bad call with the same errno", not sim_wrong, wrong=sim_wrong)
        chk_wrong = []
        for name, t, want in tables:
            rc, _, _ = _binding.table_check(t, kinds)
            if -rc != want:
                chk_wrong.append({"case": name, "rc": rc, "expected": -want})
        ctx.check(f"hvf_table_check rejects every bad table with the same errno ({len(tables)} tables)",
                  not chk_wrong, wrong=chk_wrong)
        ctx.data["cases"] = [name for name, *_ in calls]
    finally:
        if registered:
            try:
                stop_events(vmi, ev)
            except Exception as e:
                log(f"cleanup: clearing the CR3 event failed: {e!r}")
        vmi.destroy()
        sim.close()
        xen.close()
