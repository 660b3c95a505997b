#!/usr/bin/env python3
"""The lab benchmark (make bench-lab): stock VMI against hvfilter, side by side.

    bench/lab_bench.py [--from DIR] [--out DIR]

Boots the lab once (patched Xen under QEMU TCG) and runs the scenarios
hvfilter_bench_s125, hvfilter_bench_s1 and hvfilter_bench_s01 (see
lab/scenarios/hvfilter_bench.py for the method), or with ``--from`` reads
the results of an earlier run.  Prints the tables, and writes
bench/results/lab.json, docs/benchmarks.md and docs/benchmarks-lab.png.  The
engine and Python benchmarks (bench/results/engine.json, python.json) are
included in the same report when present.
"""

# ruff: noqa: E501  (the report is Markdown prose and table rows)
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOP = Path(__file__).resolve().parent.parent
SCENARIOS = ("hvfilter_bench_s125", "hvfilter_bench_s1", "hvfilter_bench_s01")
CONFIG_NAMES = {
    "A": "no monitoring",
    "B": "stock VMI (every event to dom0, filtered in Python)",
    "C": "hvfilter (rules in Xen, same tool)",
    "D": "floor (exits armed, all passed/emulated in Xen)",
}


def say(msg: str) -> None:
    """A progress line."""
    print(f"[bench-lab {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_lab(out: Path) -> int:
    """Boot the lab once with the three bench scenarios; stream progress; return lab/run's exit status."""
    cmd = [
        sys.executable,
        str(TOP / "lab" / "run"),
        "--variant",
        "patched",
        "--out",
        str(out),
        *SCENARIOS,
    ]
    say("running: " + " ".join(cmd[1:]).replace(str(TOP) + "/", ""))
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        assert p.stdout
        for line in p.stdout:
            if "[lab-run" in line or "[hvlab] share" in line or "check" in line:
                sys.stdout.write(line)
                sys.stdout.flush()
        return p.wait()


def med(xs: list[float]) -> float:
    """The median (NaN for no values)."""
    return statistics.median(xs) if xs else float("nan")


def analyse(results: dict[str, Any]) -> dict[str, Any]:
    """Per share: per-configuration medians, the ratios and the bounds."""
    shares = []
    for res in results.values():
        for label, sh in res["data"]["shares"].items():
            runs = sh["runs"]
            per: dict[str, dict[str, Any]] = {}
            for cfg in "ABCD":
                rs = [r for r in runs if r["config"] == cfg]
                if not rs:
                    continue
                per[cfg] = {
                    "runs": len(rs),
                    "work_rate": med([r["work_rate"] for r in rs]),
                    "work_rates": [round(r["work_rate"], 1) for r in rs],
                    "guest_s": med([r["guest_s"] for r in rs]),
                    "dom0_events": med([r["received"] for r in rs]),
                    "delivered": med([r["delivered"] for r in rs]),
                    # events/s into Python: every callback LibVMI ran (B: all events)
                    "dom0_events_per_s": med(
                        [r["received"] / r["guest_s"] for r in rs if r["guest_s"]]
                    ),
                    "delivered_per_s": med(
                        [r["delivered"] / r["guest_s"] for r in rs if r["guest_s"]]
                    ),
                    "cr3_writes": rs[0]["cr3_writes"],
                    "target_slices": rs[0]["target_slices"],
                    "slices": rs[0]["slices"],
                    "calls": rs[0]["calls"],
                }
            a, b, c, d = (per[k]["work_rate"] for k in "ABCD")
            ta, tb, tc, td = (per[k]["guest_s"] for k in "ABCD")
            n_events = per["B"]["dom0_events"]
            n_target = per["C"]["delivered"]
            exit_s = (td - ta) / n_events if n_events else float("nan")  # a filtered exit
            trip_s = (tb - td) / n_events if n_events else float("nan")  # dom0 round trip on top
            share_events = n_target / n_events if n_events else float("nan")
            shares.append(
                {
                    "share": label,
                    "target_slices": per["A"]["target_slices"],
                    "slices": per["A"]["slices"],
                    "gap": sh["gap"],
                    "cmdline": sh["cmdline"],
                    "configs": per,
                    "overhead_reduction": (a - b) / (a - c) if a != c else float("inf"),
                    # A's own run-to-run spread (median - slowest repeat): a
                    # difference A-C below it is not resolved by this run.
                    "a_spread": a - min(per["A"]["work_rates"]),
                    "c_resolved": (a - c) > a - min(per["A"]["work_rates"]),
                    # (A-B)/(A-C) with A-C floored at that spread: a lower bound
                    "overhead_reduction_lower_bound": (a - b)
                    / max(a - c, a - min(per["A"]["work_rates"]), 1e-9),
                    "overhead_reduction_time": (tb - ta) / (tc - ta) if tc != ta else float("inf"),
                    "filter_vs_floor": d / c,
                    "slowdown": {k: per["A"]["work_rate"] / per[k]["work_rate"] for k in "BCD"},
                    "identical_target_events": sh["identical_target_events"],
                    "target_events": sh["target_events"],
                    "target_share_of_events": share_events,
                    "filtered_exit_us": exit_s * 1e6,
                    "dom0_round_trip_us": trip_s * 1e6,
                    # C's forwarded events, each on top of D's exits
                    "dom0_round_trip_c_us": (tc - td) / n_target * 1e6
                    if n_target
                    else float("nan"),
                    # The time-overhead ratio cannot exceed either bound:
                    "bound_share": 1 / share_events if share_events else float("inf"),
                    "bound_exit_vs_round_trip": (exit_s + trip_s) / exit_s
                    if exit_s > 0
                    else float("inf"),
                }
            )
    order = {"12.5%": 0, "1%": 1, "0.1%": 2}
    shares.sort(key=lambda s: order.get(s["share"], 9))
    return {"shares": shares}


def machine() -> dict[str, str]:
    """What the numbers were measured on."""

    def cmd(*a: str) -> str:
        """A command's output, empty if it is missing."""
        try:
            return subprocess.run(a, capture_output=True, text=True, timeout=20).stdout.strip()
        except OSError:
            return ""

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in cmd("lscpu").splitlines()
            if ln.startswith("Model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": cmd("nproc"),
        "host_kernel": platform.release(),
        "qemu": cmd("qemu-system-x86_64", "--version").splitlines()[0]
        if cmd("qemu-system-x86_64", "--version")
        else "",
        "python": platform.python_version(),
    }


def fmt(x: float, nd: int = 1) -> str:
    """A number with thousands separators."""
    return f"{x:,.{nd}f}"


def plot(rep: dict[str, Any], path: Path) -> bool:
    """Work rates and overhead reduction per share, as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib missing: no plot (pip install matplotlib)")
        return False
    shares = rep["shares"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = range(len(shares))
    w = 0.2
    for i, cfg in enumerate("ABCD"):
        meds = [s["configs"][cfg]["work_rate"] / 1e6 for s in shares]
        lo = [
            max(0.0, m - min(s["configs"][cfg]["work_rates"]) / 1e6)
            for m, s in zip(meds, shares, strict=True)
        ]
        hi = [
            max(0.0, max(s["configs"][cfg]["work_rates"]) / 1e6 - m)
            for m, s in zip(meds, shares, strict=True)
        ]
        ax1.bar(
            [x + (i - 1.5) * w for x in xs],
            meds,
            w,
            yerr=[lo, hi],
            capsize=2,
            label=f"{cfg}: {CONFIG_NAMES[cfg].split(' (')[0]}",
        )
    ax1.set_xticks(list(xs), [s["share"] for s in shares])
    ax1.set_xlabel("target's share of CR3 writes and kernel-function calls")
    ax1.set_ylabel("guest work rate (M units/s; median, bars: min-max)")
    ax1.legend(fontsize=8)
    ax1.set_title("guest work rate per configuration")
    for key, style, lab in (
        ("overhead_reduction", "o-", "(A-B)/(A-C), work rates"),
        ("overhead_reduction_time", "s--", "(tB-tA)/(tC-tA), guest time"),
        ("overhead_reduction_lower_bound", "v:", "(A-B)/(A-C), A-C floored at A's spread"),
    ):
        pts = [(s["share"], s[key]) for s in shares if 0 < s[key] < float("inf")]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], style, label=lab)
    ax2.axhline(18, color="grey", ls=":", label="paper: 18x")
    ax2.set_yscale("log")
    ax2.set_xlabel("target's share")
    ax2.set_ylabel("monitoring overhead reduction (x)")
    ax2.legend(fontsize=8)
    ax2.set_title("stock VMI overhead / hvfilter overhead")
    fig.suptitle(
        "hvfilter lab benchmark (Xen 4.17 under QEMU TCG: ratios, not hardware times)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def report(
    rep: dict[str, Any], engine: list[dict[str, Any]] | None, py: dict[str, Any] | None, png: bool
) -> str:
    """docs/benchmarks.md."""
    m = rep["machine"]
    p = rep["params"]

    def us(v: float) -> str:
        return f"{fmt(v)} us" if 0 < v < float("inf") else "not resolved"

    def x(v: float) -> str:
        return f"{fmt(v)}x" if 0 < v < float("inf") else "not resolved"

    L = [
        "# Benchmarks",
        "",
        "All numbers on this page come from one `make bench` run "
        f'({rep["date"]})'
        + (', except the section "Another full run", which says where its numbers come from'
           if rep.get("other_run") else "")
        + "; `bench/results/lab.json`, `engine.json` and `python.json` hold them.",
        "",
        "**QEMU TCG inflates every exit.** The lab runs Xen 4.17 and its guests under QEMU's software "
        "emulator, where a VM exit, a hypercall and a dom0 round trip all cost far more than on hardware "
        "and not in the same proportions. Ratios measured in one run mean something; the absolute "
        "numbers are not hardware numbers.",
        "",
        "## Process-bound monitoring: stock VMI against hvfilter (the paper's benchmark)",
        "",
        "### Method",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores shared with other work, host kernel {m['host_kernel']}, "
        f"{m['qemu']}; Xen 4.17.5 (Debian's source, hvfilter patches) booted with `svm-swint-int3`, "
        "Debian 12 dom0, LibVMI 3.7.1's Python bindings.",
        f"- Workload: the lab's test guest, {p['nproc']} busy processes plus one target, KPTI (3 CR3 writes "
        f"per slice), {p['calls']} kernel-function call(s) and {p['work']} work units per slice, "
        f"`rounds={p['rounds']}`, `report=0`. The target's share of all slices, CR3 writes and "
        "kernel-function calls is set with `gap=M` (share 1/(M+1)): 12.5 % (`gap=7`), 1 % (`gap=99`), "
        "0.1 % (`gap=999`).",
        f"- Work per slice: calibrated once per boot (one unmonitored run) to about {1000 * (p.get('calibration') or {}).get('slice_s', 0):.0f} ms of "
        f"guest time per slice ({(p.get('calibration') or {}).get('ns_per_unit', 0):.2f} ns per unit measured, so `work={p['work']}`): the work between "
        "events is what makes the relative cost of monitoring meaningful, and it keeps a run of all shares within the lab's deadlines. "
        "The effective shares of a finite run: "
        + ", ".join(
            f"{s['share']}: {s['target_slices']} of {s['slices']} slices" for s in rep["shares"]
        )
        + ".",
        f'- The tool waits by {"spinning on the ring" if p.get("poll") == "spin" else "blocking in LibVMI listen()"} (`Monitor(poll="{p.get("poll")}")`)'
        + (
            "; dom0's vCPUs are pinned to pCPU 1 and the guest's vCPU to pCPU 0, in every configuration"
            if p.get("pin")
            else ""
        )
        + '. Why: see "What bounds the numbers" below.',
        "- Every measured run is a fresh guest created paused and set up before its first "
        "instruction; it stops by itself after its rounds. Its **work rate** is its own work counter "
        "divided by its own TSC time from the first slice to `done` (no dom0 clock). "
        f"Median of {p['repeats']} repeats; configurations interleaved (A B C D, A B C D, ...).",
        "- **A** no monitoring. **B** stock VMI: LibVMI's CR3-write and int3 events, an int3 at the "
        "kernel function, no hvfilter rules: every CR3 write and every hit makes the round trip to "
        'dom0, where the tool (hvfilter\'s `Monitor(filter_in="dom0")`) filters by CR3 in Python and '
        "answers every hit with EMULATE. Its breakpoint bytes are registered with hvfilter so that "
        "Xen can execute the instruction (patch 0009): this stands in for LibVMI's SET_EMUL_INSN, "
        "which the Python bindings cannot send, and is the same work for Xen, so the comparison is "
        'fair. **C** hvfilter: the same tool with `filter_in="xen"`: CR3 writes entering or leaving '
        "the target and hits inside it are forwarded, every other write passes and every other hit is "
        "emulated inside Xen. **D** the floor: the same exits armed, one rule passing every CR3 write "
        "and one emulating every hit, so nothing reaches dom0.",
        "- B and C must deliver the same target events: the sequences (kind, vCPU, old/new CR3 or "
        "RIP/GFN/CR3) are compared exactly, per share, across all repeats.",
        "",
        "### Results",
        "",
        "| share | config | work rate (units/s), median | min - max of the repeats | slowdown vs A | events to dom0 | delivered to Python | events/s into Python |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in rep["shares"]:
        for cfg in "ABCD":
            c = s["configs"][cfg]
            slow = "1.00" if cfg == "A" else fmt(s["slowdown"][cfg], 2)
            L.append(
                f"| {s['share']} | {cfg} | {fmt(c['work_rate'], 0)} | {fmt(min(c['work_rates']), 0)} - {fmt(max(c['work_rates']), 0)} | {slow} | {fmt(c['dom0_events'], 0)} "
                f"| {fmt(c['delivered'], 0)} | {fmt(c['dom0_events_per_s'], 0) if cfg in 'BC' else '-'} |"
            )
    L += [
        "",
        "| share | (A-B)/(A-C) (work rates) | lower bound (A-C floored at A's spread) | (tB-tA)/(tC-tA) (guest time) | D/C work rate | "
        "B, C identical target events | target events | filtered exit | dom0 round trip on top | "
        "bound: 1/target share of events | bound: (exit+trip)/exit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in rep["shares"]:
        L.append(
            f"| {s['share']} | **{fmt(s['overhead_reduction'])}x**{'' if s['c_resolved'] else ' (not resolved)'} | {fmt(s['overhead_reduction_lower_bound'])}x | {x(s['overhead_reduction_time'])} | "
            f"{fmt(s['filter_vs_floor'], 3)} | {'yes' if s['identical_target_events'] else '**no**'} | "
            f"{s['target_events']} | {us(s['filtered_exit_us'])} | {us(s['dom0_round_trip_us'])} | "
            f"{x(s['bound_share'])} | {x(s['bound_exit_vs_round_trip'])} |"
        )
    L += ["", rep["verdict"], ""]
    if png:
        L += ["![work rates and overhead reduction per share](benchmarks-lab.png)", ""]
    L += [
        "`(A-B)/(A-C)` is computed from work rates, as specified; it is the conservative form "
        "(a stock tool that slows the guest 100-fold loses 99 % of the rate, not 99 times the time). "
        "The guest-time form `(tB-tA)/(tC-tA)` is the paper's slowdown ratio. The filtered exit is "
        "(tD-tA) per event and the dom0 round trip (tB-tD) per event, from the medians; the time "
        "ratio can reach neither 1/(target share) nor (exit+trip)/exit, and whichever is lower is "
        "the bound the numbers meet.",
        "",
    ]
    L += [
        "### What bounds the numbers",
        "",
        "Per event the guest pays a filtered exit x in C and D (the trap, the evaluator, and Xen passing "
        "the write or emulating the instruction) and, in B and for C's forwarded events, a dom0 round "
        "trip r on top. So (tB-tA)/(tC-tA) = (x + r) / (x + f r), f = the target's share of the events: "
        "it can reach neither 1/f (the **target's share** bound) nor (x + r)/x (the **exit against a "
        "round trip** bound), and the lower of the two is the one that binds.",
        "",
        "| share | x: filtered exit | r: round trip in B | r in C (per forwarded event) | 1/f | (x+r)/x |",
        "|---|---|---|---|---|---|",
    ]

    for s in rep["shares"]:
        L.append(
            f"| {s['share']} | {us(s['filtered_exit_us'])} | {us(s['dom0_round_trip_us'])} | "
            f"{us(s['dom0_round_trip_c_us'])} | {x(s['bound_share'])} | {x(s['bound_exit_vs_round_trip'])} |"
        )
    L += [
        "",
        "These per-event costs are differences of medians of whole runs; where the difference is "
        "smaller than the run-to-run spread it comes out negative or absurd and is shown as not "
        "resolved. The round trip depends on what else the two shared cores are doing; the "
        "min-max column above shows how much each configuration varied between repeats in this run.",
    ]
    L += [
        "",
        "Under TCG the filtered exit is tens of microseconds (on hardware it is about 1 us: a VM exit "
        "plus the evaluator's tens of nanoseconds, see the engine table below), while the round trip "
        "depends on how fast dom0 gets to run. How the tool waits matters more than anything else "
        "here: with LibVMI's blocking `listen()` a round trip measured 10-40 ms in the lab (an idle "
        "dom0 vCPU must be woken, emulated), with the tool spinning on the ring and dom0 on one vCPU "
        "pinned away from the guest 0.7-2.3 ms. "
        + (
            "This run uses LibVMI's blocking `listen()`, as tools do, for B, C and D alike. Spinning "
            "would make stock VMI (B) faster, but a spinning dom0 vCPU takes a host core from the "
            "guest's QEMU thread on this shared 2-core machine and slows every monitored configuration for "
            "reasons that have nothing to do with the filter"
            + (" (see the other run below). " if rep.get("other_run") else ". ")
            if p.get("poll") == "block"
            else "This run uses the spinning tool for B, C and D: it makes stock VMI much faster. "
        )
        + "A forwarded event in C costs more than one in B because dom0 sits idle between C's rare "
        "events and has to be woken: under TCG that wake-up, not the filter, is most of C's cost.",
        "",
    ]
    o = rep.get("other_run")
    if o:
        op = o["params"]
        L += [
            f'### Another full run: the tool spinning (`poll="{op.get("poll")}"`)',
            "",
            f"The same benchmark, run just before this one (`work={op.get('work')}`, `rounds={op.get('rounds')}`, "
            f"{op.get('repeats')} repeats), with the tool spinning on the ring. It is why this report uses "
            "the blocking tool: a spinning dom0 vCPU takes a host core from the guest's QEMU thread, so D, "
            "where nothing reaches dom0, ran far slower than A while another QEMU shared the machine."
            + (
                " Its numbers come from its console log (one line per measured run): its JSON results "
                "were lost to a lab-runner bug (scenario timeouts cut at 300 s, since fixed), so the "
                "exact B/C comparison is not recorded and the last repeats of each share are missing."
                if o.get("from_log")
                else ""
            ),
            "",
            "| share | A | B | C | D | (A-B)/(A-C) | (tB-tA)/(tC-tA) | D/C | identical |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in o["shares"]:
            c = s["configs"]
            L.append(
                f"| {s['share']} | {fmt(c['A']['work_rate'], 0)} | {fmt(c['B']['work_rate'], 0)} | "
                f"{fmt(c['C']['work_rate'], 0)} | {fmt(c['D']['work_rate'], 0)} | {fmt(s['overhead_reduction'])}x | "
                f"{fmt(s['overhead_reduction_time'])}x | {fmt(s['filter_vs_floor'], 3)} | "
                f"{ {True: 'yes', False: 'no'}.get(s['identical_target_events'], 'not recorded') } |"
            )
        L += ["", "(work rates in units/s, medians)", ""]
    if engine:
        L += [
            "## The rule engine (`make bench-engine`)",
            "",
            "The evaluator compiled into Xen, run in the userspace harness "
            "(`xen/tests/hvfilter/bench_eval.c`), median of repeats over about a million events:",
            "",
            "| case | rules | conditions | set size | ns/event (median) | min | max |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in engine:
            L.append(
                f"| {e['case']} | {e['rules']} | {e['conditions']} | {e['set_size']} | {e['ns_per_event']} "
                f"| {e['min_ns']} | {e['max_ns']} |"
            )
        L += [
            "",
            "Flat in the set size (hash lookups); small against a bare VM exit on hardware "
            "(about 0.5-1 us).",
            "",
        ]
    if py:
        L += [
            "## The Python compile and install path (`make bench-python`)",
            "",
            "| measurement | value |",
            "|---|---|",
        ]
        for k, v in py.items():
            L.append(f"| `{k}` | {fmt(float(v), 1)} |")
        L += [
            "",
            "Units are in the key names (`_us`, `_mev_s`, `_kev_s`); these are the library's "
            "costs in one process, not the hypervisor's.",
            "",
        ]
    L += [
        "## Reproducing",
        "",
        "    make bench            # engine, Python, then the lab (patched Xen)",
        "    bench/lab_bench.py --from DIR   # re-analyse the JSON of an earlier lab run",
        "",
        "This page was rendered from the run's JSON by `bench/lab_bench.py --from build/bench/lab "
        "--also build/bench/lab-spin --also-poll spin` (the same numbers `make bench` wrote, plus the "
        "summary of the other run)."
        if rep.get("other_run")
        else "",
        "",
    ]
    return "\n".join(L)


def verdict(rep: dict[str, Any]) -> str:
    """The sentences that say which targets were met."""
    by = {s["share"]: s for s in rep["shares"]}
    out = []
    one, tenth = by.get("1%"), by.get("0.1%")
    if one:
        r = one["overhead_reduction"]
        lb = one["overhead_reduction_lower_bound"]
        a_rate = one["configs"]["A"]["work_rate"]
        c_slow = 100 * (1 - one["configs"]["C"]["work_rate"] / a_rate)
        a_spread = 100 * one["a_spread"] / a_rate
        out.append(
            f"At the 1 % share (A-B)/(A-C) computes to {r:.1f}x from the medians"
            + (
                f" ({'meets' if r >= 18 else 'misses'} the 18x target{', and the 50x aim' if r >= 50 else ''})."
                if one["c_resolved"]
                else f", but C's slowdown against A ({c_slow:.1f} %) "
                f"is within A's own run-to-run spread ({a_spread:.1f} %), so this "
                f"run does not resolve it: what it shows is a lower bound of {lb:.1f}x "
                f"({'at least the 18x target' if lb >= 18 else 'below the 18x target: not demonstrated'})."
            )
        )
        lim = (
            "the target's share"
            if one["bound_share"] < one["bound_exit_vs_round_trip"]
            else "the cost of a filtered exit against a dom0 round trip"
        )
        out.append(
            f"There the bound that applies is {lim} "
            f"(target's share: 1/f = {fmt(one['bound_share'])}x; exit against round trip: (x+r)/x = "
            f"{fmt(one['bound_exit_vs_round_trip'])}x)."
        )
        bound = min(one["bound_share"], one["bound_exit_vs_round_trip"])
        if bound < 18:
            out.append(
                f"That bound is itself below 18x: even a filter costing nothing beyond its exit "
                f"(C = D) could not show 18x in this lab, because QEMU's TCG makes a filtered exit "
                f"cost {fmt(one['filtered_exit_us'])} us against {fmt(one['dom0_round_trip_us'])} us "
                f"for a round trip to dom0, where hardware has about 1 us against 15-81 us."
            )
    if tenth:
        f = tenth["filter_vs_floor"]
        out.append(
            f"At 0.1 %, the floor D runs {f:.3f}x as fast as C "
            f"({'within' if f <= 1.1 else 'outside'} the 1.1x target)."
        )
    ident = all(s["identical_target_events"] for s in rep["shares"])
    out.append(
        "B and C delivered identical target event sequences at every share."
        if ident
        else "B and C did **not** deliver identical target events at every share (see lab.json)."
    )
    return " ".join(out)


def load(out: Path, rc: int) -> dict[str, Any] | None:
    """The three scenarios' results in ``out``, or None (with a message)."""
    results = {}
    for sc in SCENARIOS:
        p = out / f"{sc}.json"
        if not p.exists():
            say(f"no result for {sc} in {out} (lab/run exit {rc}); see {out}/serial.log")
            return None
        res = json.loads(p.read_text())
        if not res.get("ok"):
            bad = [c for c in res.get("checks", []) if not c["ok"]]
            say(f"{sc} failed: {res.get('error')} {json.dumps(bad)[:800]}")
        if not res.get("data", {}).get("shares"):
            return None
        results[sc] = res
    return results


def load_serial(out: Path) -> dict[str, Any] | None:
    """Per-run numbers from a run's console log, when its JSON results were lost.

    The scenarios log one line per measured run; the exact-event comparison
    is not in the log, so ``identical_target_events`` is None.
    """
    import re

    log = out / "serial.log"
    if not log.exists():
        return None
    pat = re.compile(
        r"\[hvlab\] share (\S+) rep (\d+) ([ABCD]): ([\d.]+) work/s, guest ([\d.]+) s, "
        r"dom0 got (\d+), delivered (\d+)"
    )
    shares: dict[str, dict[str, Any]] = {}
    seen = set()
    for line in log.read_text(errors="replace").splitlines():
        m = pat.search(line)
        if not m or m.group(0) in seen:
            continue
        seen.add(m.group(0))
        label, rep, cfg, rate, secs, got, dl = m.groups()
        sh = shares.setdefault(
            label,
            {
                "gap": {"12.5%": 7, "1%": 99, "0.1%": 999}.get(label, 0),
                "cmdline": "",
                "runs": [],
                "identical_target_events": None,
                "target_events": None,
            },
        )
        sh["runs"].append(
            {
                "config": cfg,
                "repeat": int(rep),
                "work_rate": float(rate),
                "guest_s": float(secs),
                "received": int(got),
                "delivered": int(dl),
                "cr3_writes": 0,
                "calls": 0,
                "target_slices": 0,
                "slices": 0,
            }
        )
    if not shares:
        return None
    text = log.read_text(errors="replace")
    work = re.search(r"calibration: .* -> work=(\d+)", text)
    rounds = max(
        (
            int(x)
            for x in re.findall(
                r"cmdline 'nproc=\d+ gap=\d+ calls=\d+ work=\d+ kpti=1 rounds=(\d+)", text
            )
        ),
        default=None,
    )
    for sh in shares.values():
        sh["target_events"] = next((r["delivered"] for r in sh["runs"] if r["config"] == "C"), 0)
    return {
        "serial": {
            "ok": False,
            "data": {
                "shares": shares,
                "work": int(work.group(1)) if work else None,
                "rounds": rounds,
                "repeats": 1 + max(r["repeat"] for sh in shares.values() for r in sh["runs"]),
                "poll": None,
                "pin": None,
            },
        }
    }


def main() -> int:
    """Run (or read) the lab benchmark and write the results."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--from", dest="src", help="analyse an earlier run's result directory")
    ap.add_argument(
        "--out", default=str(TOP / "build" / "bench" / "lab"), help="lab/run's result directory"
    )
    ap.add_argument(
        "--also",
        help="an earlier full run's result directory to summarise beside this one "
        "(e.g. the same benchmark with another waiting mode)",
    )
    ap.add_argument("--also-poll", help="the waiting mode of the --also run, if its files lack it")
    a = ap.parse_args()
    out = Path(a.src or a.out)
    rc = 0
    if not a.src:
        out.mkdir(parents=True, exist_ok=True)
        rc = run_lab(out)
    results = load(out, rc)
    if results is None:
        return 1
    rep = analyse(results)
    if a.also:
        other = load(Path(a.also), 0) or load_serial(Path(a.also))
        if other is not None and all(
            {r["config"] for r in sh["runs"]} == set("ABCD")
            for res in other.values()
            for sh in res["data"]["shares"].values()
        ):
            o = analyse(other)
            od = next(iter(other.values()))["data"]
            o["params"] = {k: od.get(k) for k in ("work", "rounds", "repeats", "poll", "pin")}
            o["dir"] = Path(a.also).name
            o["from_log"] = "serial" in other
            if a.also_poll:
                o["params"]["poll"] = a.also_poll
            rep["other_run"] = o
    d0 = next(iter(results.values()))["data"]
    rep["params"] = {
        k: d0.get(k)
        for k in ("nproc", "calls", "work", "rounds", "repeats", "poll", "pin", "calibration")
    }
    rep["machine"] = machine()
    # When the lab run ended (its results' time), not when this page was rendered.
    rep["date"] = time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime((out / f"{SCENARIOS[0]}.json").stat().st_mtime)
    )
    rep["scenarios_ok"] = {sc: bool(r.get("ok")) for sc, r in results.items()}
    by = {s["share"]: s for s in rep["shares"]}
    rep["overhead_reduction"] = by["1%"]["overhead_reduction"] if "1%" in by else None
    rep["filter_vs_floor"] = by["0.1%"]["filter_vs_floor"] if "0.1%" in by else None
    rep["identical_target_events"] = all(s["identical_target_events"] for s in rep["shares"])
    rep["verdict"] = verdict(rep)
    for s in rep["shares"]:
        say(
            f"share {s['share']:>5}: "
            + "  ".join(
                f"{k} {s['configs'][k]['work_rate']:>12,.0f}/s ({s['configs'][k]['dom0_events']:,.0f} to dom0)"
                for k in "ABCD"
            )
        )
        say(
            f"             (A-B)/(A-C) {s['overhead_reduction']:.1f}x  time ratio {s['overhead_reduction_time']:.1f}x"
            f"  D/C {s['filter_vs_floor']:.3f}  identical {s['identical_target_events']}"
        )
    say(rep["verdict"])
    res_dir = TOP / "bench" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "lab.json").write_text(json.dumps(rep, indent=1) + "\n")
    eng = res_dir / "engine.json"
    pyj = res_dir / "python.json"
    png = plot(rep, TOP / "docs" / "benchmarks-lab.png")
    (TOP / "docs" / "benchmarks.md").write_text(
        report(
            rep,
            json.loads(eng.read_text()) if eng.exists() else None,
            json.loads(pyj.read_text()) if pyj.exists() else None,
            png,
        )
    )
    say(
        "written: bench/results/lab.json, docs/benchmarks.md"
        + (", docs/benchmarks-lab.png" if png else "")
    )
    return 0 if all(rep["scenarios_ok"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
