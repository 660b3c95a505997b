"""Lab tests: real Xen under QEMU (docs/lab.md).  Selected only with ``-m lab``.

The fast test run (``make test``) collects this directory too; every test
here is then deselected (not skipped) unless the marker expression names
``lab``, so the fast run neither boots QEMU nor reports phantom skips.
``make lab-test`` builds the lab and runs ``pytest -m lab tests/lab``.

One session-scoped boot runs every scenario the tests ask for
(``LAB_SCENARIOS``) and hands each test its scenario's JSON result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
TOP = HERE.parent.parent
VARIANT = os.environ.get("XEN_VARIANT", "plain")
LAB_SCENARIOS = ("toolstack", "libvmi_basics", "cr3_libvmi", "hvfilter_binding")
# Scenarios that need hvfilter in the hypervisor run only on the patched variant.
PATCHED_SCENARIOS = ("hvfilter_process_bound", "hvfilter_bp_emulate", "hvfilter_bp_forward",
                     "hvfilter_monitor", "hvfilter_bench_smoke",
                     "hvfilter_privilege", "hvfilter_badinput", "hvfilter_teardown", "hvfilter_replace",
                     "demo")
if VARIANT == "patched":
    LAB_SCENARIOS += PATCHED_SCENARIOS


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs the QEMU lab (real Xen); run with -m lab (make lab-test)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("markexpr", ""):
        return  # an explicit -m expression decides (pyproject's default: 'not lab ...')
    lab_items = [i for i in items if HERE in Path(str(i.fspath)).resolve().parents]
    if lab_items:
        config.hook.pytest_deselected(items=lab_items)
        items[:] = [i for i in items if i not in lab_items]


class LabRun:
    def __init__(self, out: Path, returncode: int, output: str, seconds: float):
        self.out = out
        self.returncode = returncode
        self.output = output
        self.seconds = seconds
        summary = out / "summary.json"
        self.summary: dict[str, Any] = json.loads(summary.read_text()) if summary.exists() else {}

    def result(self, scenario: str) -> dict[str, Any]:
        p = self.out / f"{scenario}.json"
        if not p.exists():
            pytest.fail(f"no result for scenario {scenario} (lab/run exit {self.returncode}; "
                        f"failure: {self.summary.get('failure')}); tail of lab/run:\n{self.output[-4000:]}")
        res: dict[str, Any] = json.loads(p.read_text())
        return res

    @staticmethod
    def checks(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in res.get("checks", [])}

    @staticmethod
    def assert_passed(res: dict[str, Any]) -> None:
        failed = [c for c in res.get("checks", []) if not c["ok"]]
        assert res["ok"] and not failed and not res.get("error"), (
            f"scenario {res['scenario']} failed: error={res.get('error')!r}\n"
            f"failed checks: {json.dumps(failed, indent=1)[:3000]}\n"
            f"{res.get('traceback') or ''}\n"
            f"xl dmesg tail:\n{(res.get('xl_dmesg_tail') or '')[-3000:]}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    """Boot the lab once and run all scenarios (lab/run), streaming its progress."""
    out = tmp_path_factory.mktemp("lab-run")
    cmd = [sys.executable, str(TOP / "lab" / "run"), "--variant", VARIANT, "--out", str(out), *LAB_SCENARIOS]
    t0 = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        assert p.stdout
        for line in p.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
        rc = p.wait()
    run = LabRun(out, rc, "".join(lines), time.monotonic() - t0)
    if not run.summary:
        pytest.fail(f"lab/run produced no summary (exit {rc}):\n{run.output[-4000:]}")
    return run

