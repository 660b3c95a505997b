"""Atomic table replacement under load: no event lost, none counted twice.

Needs XEN_VARIANT=patched.  Two equivalent process-bound CR3 tables,
written differently, alternate while the guest runs and LibVMI consumes
the forwarded events:

  A: forward when exactly one of new/old is the target (capacity 4 set),
     pass the rest;
  B: pass when neither is the target, pass when both are, forward the rest
     (capacity 4096 set, so a much larger table).

Both forward exactly the writes that enter or leave the target, so the
result must not depend on when the swaps happen.  Swaps come from two
places: inside every forwarded event's callback (the vCPU waits for dom0)
and from the main loop between ``listen`` calls, with the domain paused
around statistics + replace (so each generation's final counts are read
before its table goes).  The guest is created paused, the first table is
installed before its first instruction, and it stops by itself after
``rounds=N``, so:

- the per-kind seen count equals the guest's own CR3 writes, exactly;
- the forwarded count equals the schedule model's ins and outs, and LibVMI
  received exactly those (old, new) pairs, in order: nothing lost, nothing
  twice;
- every generation's rule counters obey conservation, generations are
  consecutive, and summed over generations they equal the per-kind counts.
"""

from __future__ import annotations

from typing import Any

import attrs
import guestinfo
from cr3run import PROCESS_MASK, listen_until_done, schedule, stop_events, transitions
from hvlab import Context, log

TIMEOUT = 540
ROUNDS = 300
NPROC = 4
GUEST_CMDLINE = f"nproc={NPROC} quiet=1 calls=2 work=16 kpti=1 rounds={ROUNDS}"


def run(ctx: Context) -> None:
    if ctx.variant != "patched":
        ctx.require("runs on the patched hypervisor (XEN_VARIANT=patched)", False, variant=ctx.variant)
    from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, VMIMode, X86Reg
    from libvmi.event import RegAccess, RegEvent

    import hvfilter as hv
    from hvfilter import NEW, OLD, Kind, forward, on, pass_
    from hvfilter._lowlevel import ShimControl

    root = guestinfo.kroot(0)
    ta, tb = hv.process("target", root, capacity=4), hv.process("target", root, capacity=4096)
    table_a = hv.compile([
        on(Kind.CR3_WRITE).when(NEW.in_(ta) ^ OLD.in_(ta)).then(forward),
        on(Kind.CR3_WRITE).then(pass_),
    ]).table
    table_b = hv.compile([
        on(Kind.CR3_WRITE).when(NEW.not_in(tb) & OLD.not_in(tb)).then(pass_),
        on(Kind.CR3_WRITE).when(NEW.in_(tb) & OLD.in_(tb)).then(pass_),
        on(Kind.CR3_WRITE).then(forward),
    ]).table
    tables = (table_a, table_b)

    g = ctx.create_guest(GUEST_CMDLINE, paused=True)
    domid = g.domid
    assert domid is not None
    ctl = ShimControl.open_xen()
    vmi = Libvmi(g.name, INIT_DOMAINNAME | INIT_EVENTS, mode=VMIMode.XEN, partial=True)
    events: list[tuple[int, int]] = []
    gens: list[dict[str, Any]] = []          # one per generation, closed by the next install
    state: dict[str, Any] = {"error": None, "installs": 0, "in_callback": 0, "in_loop": 0, "mem": {}}

    def install() -> None:
        which = state["installs"] % 2
        ctl.table_replace(domid, tables[which])
        state["installs"] += 1
        info = ctl.get_info(domid)
        state["mem"].setdefault("AB"[which], info.mem_bytes)
        gens.append({"generation": info.generation, "table": "AB"[which], "nr_rules": info.nr_rules})

    def close_generation() -> None:
        st = ctl.stats_get(domid)
        gens[-1]["stats"] = attrs.asdict(st)

    def swap() -> None:
        close_generation()
        install()

    def on_cr3(_vmi: Any, e: Any) -> None:
        try:
            events.append((e.previous, e.value))
            swap()
            state["in_callback"] += 1
        except Exception as ex:  # re-raised after LibVMI returns
            state["error"] = ex

    def between() -> None:
        if state["error"] is not None:
            raise state["error"]
        vmi.pause_vm()
        try:
            swap()
            state["in_loop"] += 1
        finally:
            vmi.resume_vm()

    ev = RegEvent(X86Reg.CR3, RegAccess.W, on_cr3)
    registered = False
    try:
        vmi.register_event(ev)
        registered = True
        install()
        g.unpause()
        secs = listen_until_done(vmi, 420, f"the guest's {ROUNDS} rounds", between)
        stop_events(vmi, ev)
        registered = False
        if state["error"] is not None:
            raise state["error"]
        close_generation()
        buf, _ = vmi.read_pa(guestinfo.INFO_GPA, guestinfo.INFO_SIZE)
        final = guestinfo.parse(buf)
        seq = schedule(NPROC + 1, final.slices)
        model = [(o & PROCESS_MASK, n & PROCESS_MASK) for o, n in transitions(seq)]
        got = [(o & PROCESS_MASK, n & PROCESS_MASK) for o, n in events]
        kind = ctl.stats_get(domid).kinds[1]
        sum_seen = sum(r["seen"] for x in gens for r in x["stats"]["rules"]) + \
            sum(x["stats"]["unmatched"]["seen"] for x in gens)
        sum_fwd = sum(r["forwarded"] for x in gens for r in x["stats"]["rules"]) + \
            sum(x["stats"]["unmatched"]["forwarded"] for x in gens)

        def conserved(c: dict[str, int]) -> bool:
            return c["seen"] == c["forwarded"] + c["passed"] + c["emulated"] + c["sampled_out"]

        bad_gens = [x["generation"] for x in gens
                    if x["stats"]["generation"] != x["generation"]
                    or not all(conserved(r) for r in x["stats"]["rules"])
                    or not conserved(x["stats"]["unmatched"])
                    or x["stats"]["nr_rules"] != x["nr_rules"]]
        numbers = [x["generation"] for x in gens]
        log(f"{final.cr3_writes} CR3 writes in {secs:.1f} s, {state['installs']} installs "
            f"({state['in_callback']} in callbacks, {state['in_loop']} from the loop); filter saw {kind.seen}, "
            f"forwarded {kind.forwarded} (model {len(model)}), LibVMI {len(events)}")
        ctx.data.update(guest_cr3_writes=final.cr3_writes, filter_seen=kind.seen, filter_forwarded=kind.forwarded,
                        filter_passed=kind.passed, expected_forwarded=len(model), libvmi_events=len(events),
                        installs=state["installs"], swaps_in_callback=state["in_callback"],
                        swaps_from_loop=state["in_loop"], generations=len(gens),
                        sum_generation_seen=sum_seen, sum_generation_forwarded=sum_fwd,
                        mem_bytes_by_table=state["mem"], seconds=round(secs, 2),
                        rules_by_table={"A": len(table_a.rules), "B": len(table_b.rules)})
        ctx.check("the guest finished its rounds", final.state == guestinfo.STATE_DONE and final.consistent
                  and final.rounds == ROUNDS, state=final.state_name)
        ctx.check("the model has the guest's number of CR3 writes", len(seq) == final.cr3_writes,
                  model=len(seq), guest=final.cr3_writes)
        ctx.check("tables were swapped many times, in callbacks and while the guest ran",
                  state["in_callback"] >= 100 and state["in_loop"] >= 5,
                  in_callback=state["in_callback"], in_loop=state["in_loop"])
        ctx.check("the two tables differ in size (set capacity 4 vs 4096)",
                  len(state["mem"]) == 2 and state["mem"]["A"] != state["mem"]["B"], mem=state["mem"])
        ctx.check("per-kind seen == the guest's CR3 writes (exact)", kind.seen == final.cr3_writes,
                  seen=kind.seen, guest=final.cr3_writes)
        ctx.check("forwarded == the schedule's ins and outs of the target", kind.forwarded == len(model),
                  forwarded=kind.forwarded, expected=len(model))
        ctx.check("LibVMI got exactly the forwarded events", len(events) == kind.forwarded,
                  libvmi=len(events), forwarded=kind.forwarded)
        ctx.check("LibVMI got the model's (old, new) pairs in order: none lost, none twice", got == model,
                  first_difference=next((i for i, (a, b) in enumerate(zip(got, model)) if a != b), None))
        ctx.check("generations are consecutive, one per install",
                  numbers == list(range(numbers[0], numbers[0] + len(numbers))) and len(numbers) == state["installs"],
                  first=numbers[0], last=numbers[-1], installs=state["installs"])
        ctx.check("every generation's counters are conserved and belong to it", not bad_gens, bad=bad_gens[:10])
        ctx.check("summed over generations, the rules saw every event exactly once",
                  sum_seen == kind.seen and sum_fwd == kind.forwarded,
                  sum_seen=sum_seen, seen=kind.seen, sum_forwarded=sum_fwd, forwarded=kind.forwarded)
    finally:
        if registered:
            try:
                stop_events(vmi, ev)
            except Exception as e:
                log(f"cleanup: clearing the CR3 event failed: {e!r}")
        vmi.destroy()
        ctl.close()
