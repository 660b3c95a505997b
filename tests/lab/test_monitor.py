"""Lab tests of the LibVMI adapter, the example tool and the benchmark's behaviour.

The scenarios (lab/scenarios/hvfilter_monitor.py, hvfilter_bench_smoke.py)
make the exact checks in dom0; these restate the central claims on the
host.  Timing is not asserted anywhere: that is make bench's job.
"""

from __future__ import annotations

import os

import pytest

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.environ.get("XEN_VARIANT", "plain") != "patched",
                       reason="needs hvfilter in the hypervisor: make lab-test XEN_VARIANT=patched"),
]


def test_example_tool_traces_exactly_the_target(lab) -> None:
    res = lab.result("hvfilter_monitor")
    lab.assert_passed(res)
    ex = res["data"]["example"]
    t = ex["target_slices"]
    assert t > 0 and ex["exit"] == 0
    assert ex["switches"] == 2 * t
    assert ex["calls"] == 2 * t                      # calls=2 per slice
    c = lab.checks(res)
    assert c["example: the int3 is gone from guest memory after exit"]["ok"]
    assert c["example: no rule and no breakpoint left in Xen"]["ok"]


def test_adapter_scope_updates_exceptions_and_teardown(lab) -> None:
    res = lab.result("hvfilter_monitor")
    lab.assert_passed(res)
    c = lab.checks(res)
    assert c["api: the callback's exception reached the caller of listen()"]["ok"]
    assert c["api: after the change every event concerned the target, none process 1 alone"]["ok"]
    assert c["api: leaving the block restored the byte"]["ok"]
    assert c["api: the guest ran on and finished with a clean self-check"]["ok"]
    assert res["data"]["api"]["after"] == 40


def test_benchmark_configurations_behave(lab) -> None:
    res = lab.result("hvfilter_bench_smoke")
    lab.assert_passed(res)
    sh = res["data"]["shares"]["1%"]
    assert sh["identical_target_events"] and sh["target_events"] > 0
    runs = {r["config"]: r for r in sh["runs"]}
    assert set(runs) == {"A", "B", "C", "D"}
    assert runs["B"]["received"] == runs["B"]["cr3_writes"] + runs["B"]["calls"]
    assert runs["C"]["received"] == runs["C"]["delivered"] == sh["target_events"]
    assert runs["D"]["received"] == 0 and runs["A"]["received"] == 0
    assert runs["B"]["delivered"] == runs["C"]["delivered"]
    assert all(r["mismatches"] == 0 and r["exceptions"] == 0 for r in runs.values())
