"""``hvfilter bench``: the Python library's own costs, as a table and JSON.

What it measures (median of repeats, on this machine):

* ``compile()`` of the process-bound rules and of a table at the limits;
* the simulator's throughput over the generated guest workload, with no
  table, with the process-bound rules, and through Python subscriptions;
* ``Domain.feed()`` of Python event objects (the per-event conversion cost).

These are the library's costs in this process.  They say nothing about the
hypervisor's speed; the evaluator's own cost per event is measured by the
C harness (``make bench-engine``).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from hvfilter.abi import LIMITS, Kind
from hvfilter.compiler import compile
from hvfilter.demo import ORIGINAL_INSN, process_bound_rules
from hvfilter.events import Cpuid, Event
from hvfilter.hypervisor import open
from hvfilter.rules import NEW, AllOf, forward, on
from hvfilter.workload import GuestWorkload


def _median(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sim_run(wl: GuestWorkload, rules: bool, subscribe: bool) -> float:
    with open("sim") as hyp:
        dom = hyp.create_domain(1, vcpus=wl.nr_vcpus)
        dom.add_breakpoint(wl.bp_gpa, ORIGINAL_INSN)
        target = wl.process_set(0)
        if rules:
            dom.install(compile(process_bound_rules(target)))
        got: list[Event] = []
        if subscribe:
            dom.subscribe(process=target).on(got.append)
        else:
            dom.subscribe(process=target).close()
        dom.play(wl)
        t0 = time.perf_counter()
        dom.run()
        return time.perf_counter() - t0


def run(rounds: int = 20000, repeats: int = 5) -> dict[str, float]:
    """Run the measurements; returns name -> value (see the table's units).

    Example:
        >>> run(rounds=1000, repeats=1)["sim_rules_mev_s"] > 0
        True

    """
    wl = GuestWorkload(nr_busy=8, quiet=4, calls=16, rounds=rounds)
    target = wl.process_set(0)
    rules = process_bound_rules(target)
    big = [on(Kind.CR3_WRITE).when(AllOf(tuple(NEW.eq(i) for i in range(LIMITS.max_conds))))
           .then(forward)] * (LIMITS.max_total_conds // LIMITS.max_conds)
    res: dict[str, float] = {
        "compile_process_bound_us": 1e6 * _median(lambda: compile(rules), 50),
        "compile_full_table_us": 1e6 * _median(lambda: compile(big), 20),
        "events": float(wl.events),
    }
    for name, with_rules, sub in (("sim_no_table_mev_s", False, False),
                                  ("sim_rules_mev_s", True, False),
                                  ("sim_rules_subscribed_mev_s", True, True)):
        secs = statistics.median(_sim_run(wl, with_rules, sub) for _ in range(repeats))
        res[name] = wl.events / secs / 1e6
    evs = [Cpuid(i % 2, i % 7) for i in range(20000)]
    with open("sim") as hyp:
        dom = hyp.create_domain(1, vcpus=2)
        dom.install(compile([on(Kind.CPUID).then(forward)]))
        secs = _median(lambda: dom.feed(evs), repeats)
    res["feed_python_events_kev_s"] = len(evs) / secs / 1e3
    return res


def main(out: Callable[[str], None], json_path: Path | None, rounds: int) -> dict[str, float]:
    """Print the table and write the JSON file."""
    res = run(rounds=rounds)
    units = {
        "compile_process_bound_us": ("compile() of the process-bound rules", "us"),
        "compile_full_table_us": ("compile() of a table at MAX_TOTAL_CONDS", "us"),
        "events": ("events in the generated workload", ""),
        "sim_no_table_mev_s": ("simulator, no table", "M events/s"),
        "sim_rules_mev_s": ("simulator, process-bound rules", "M events/s"),
        "sim_rules_subscribed_mev_s": ("  ... with a Python subscription", "M events/s"),
        "feed_python_events_kev_s": ("Domain.feed() of Python events", "k events/s"),
    }
    out(f"{'measurement':<46}{'value':>14}  unit")
    out("-" * 72)
    for k, v in res.items():
        label, unit = units[k]
        out(f"{label:<46}{v:>14,.1f}  {unit}")
    out("(the library's costs in this process, not the hypervisor's)")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
        out(f"written: {json_path}")
    return res
