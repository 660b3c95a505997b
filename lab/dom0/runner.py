#!/usr/bin/env python3
"""Run lab scenarios in dom0 and report their results as JSON.

    runner.py [--guest guest.elf] [--out DIR] [--emit] [--timeout S] SCENARIO...

SCENARIO is the name of a module in ../scenarios (e.g. ``cr3_libvmi``) or
``pytest:<args>`` to run a pytest selection inside dom0.  Each result is a
JSON object {scenario, ok, checks, data, error, duration_s, ...}.

In the QEMU lab, dom0's /init calls this with --emit: every result is printed
base64-encoded between @@HVLAB-RESULT markers on the console, which lab/run
decodes on the host.  On a real Xen host, run it as root in dom0 with
--out DIR (and --guest pointing at a built guest.elf) instead.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import zlib
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(LAB, "guest"))  # guestinfo.py, the guest's info-page parser

import hvlab  # noqa: E402


class ScenarioTimeout(hvlab.LabError):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise ScenarioTimeout("scenario timed out")


def run_module(name: str, guest: str, timeout_override: int | None) -> dict[str, Any]:
    path = os.path.join(LAB, "scenarios", f"{name}.py")
    ctx = hvlab.Context(name, guest, os.environ.get("HVLAB_VARIANT", "unknown"))
    res: dict[str, Any] = {"scenario": name, "ok": False, "error": None}
    if not os.path.isfile(path):
        res["error"] = f"no scenario '{name}' ({path} does not exist)"
        return res
    spec = importlib.util.spec_from_file_location(f"scenario_{name}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    timeout = timeout_override or getattr(mod, "TIMEOUT", hvlab.DEFAULT_TIMEOUT)
    res["timeout_s"] = timeout
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(timeout))
    try:
        spec.loader.exec_module(mod)
        if not timeout_override:
            # The module's TIMEOUT exists only once it has been executed.
            timeout = getattr(mod, "TIMEOUT", hvlab.DEFAULT_TIMEOUT)
            res["timeout_s"] = timeout
            signal.alarm(int(timeout))
        mod.run(ctx)
        res["ok"] = ctx.ok
        if not ctx.checks:
            res["error"] = "scenario made no checks"
    except ScenarioTimeout:
        res["error"] = f"scenario '{name}' did not finish within {timeout} s"
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
    finally:
        signal.alarm(0)
        for g in ctx.guests:
            try:
                res.setdefault("guest_console", {})[g.name] = g.console()[-8000:]
                g.destroy()
            except Exception as e:  # report, don't mask the scenario's own result
                res.setdefault("cleanup_errors", []).append(f"{g.name}: {e!r}")
    res["checks"] = ctx.checks
    res["data"] = ctx.data
    return res


def run_pytest(sel: str, guest: str, timeout_override: int | None) -> dict[str, Any]:
    args = sel.split(",")
    name = "pytest:" + sel
    timeout = timeout_override or hvlab.DEFAULT_TIMEOUT
    env = dict(os.environ, HVLAB_GUEST=guest, PYTHONPATH=os.pathsep.join([HERE, os.path.join(LAB, "guest")]))
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                           cwd=LAB, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
        out, rc = p.stdout, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), -1
    ok = rc == 0
    return {"scenario": name, "ok": ok, "error": None if ok else f"pytest exit code {rc}",
            "checks": [{"name": f"pytest {sel}", "ok": ok, "exit_code": rc}],
            "data": {"output_tail": out[-6000:]}}


def emit(res: dict[str, Any]) -> None:
    """Print a result on the console in a form that survives interleaved Xen output.

    Each line carries its sequence number and a CRC, and the end marker the
    SHA-256 of the whole payload, so lab/run detects any corruption."""
    payload = base64.b64encode(zlib.compress(json.dumps(res).encode(), 9)).decode()
    chunks = [payload[i:i + 64] for i in range(0, len(payload), 64)] or [""]
    name = res["scenario"].replace(" ", "_")
    digest = hashlib.sha256(payload.encode()).hexdigest()
    out = [f"@@HVLAB-RESULT-BEGIN {name} {len(chunks)}@@"]
    for i, c in enumerate(chunks):
        out.append(f"@@HVR {i} {zlib.crc32(c.encode()):08x} {c}@@")
    out.append(f"@@HVLAB-RESULT-END {name} {digest}@@")
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="+")
    ap.add_argument("--guest", default=os.environ.get("HVLAB_GUEST", os.path.join(LAB, "guest", "guest.elf")),
                    help="the test guest kernel (default: %(default)s)")
    ap.add_argument("--out", help="write <scenario>.json files into this directory")
    ap.add_argument("--emit", action="store_true", help="print results between console markers (QEMU lab)")
    ap.add_argument("--timeout", type=int, help="override every scenario's timeout (seconds)")
    ap.add_argument("--variant", choices=["plain", "patched"],
                    help="which hypervisor this is (scenarios may expect hvfilter or not); "
                         "default: $HVLAB_VARIANT as set by the lab's /init")
    a = ap.parse_args()
    if a.variant:
        os.environ["HVLAB_VARIANT"] = a.variant

    results = []
    for sc in a.scenarios:
        hvlab.stage(f"scenario-start {sc}")
        t0 = time.monotonic()
        if sc.startswith("pytest:"):
            res = run_pytest(sc[len("pytest:"):], a.guest, a.timeout)
        else:
            res = run_module(sc, a.guest, a.timeout)
        res["duration_s"] = round(time.monotonic() - t0, 2)
        if not res["ok"]:
            res["xl_dmesg_tail"] = hvlab.xl_dmesg()[-12000:]
            if res.get("error"):
                hvlab.log(f"scenario {sc} error: {res['error']}")
            if res.get("traceback"):
                print(res["traceback"], flush=True)
        hvlab.stage(f"scenario-end {sc} {'ok' if res['ok'] else 'FAILED'} {res['duration_s']}s")
        results.append(res)
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            with open(os.path.join(a.out, sc.replace("/", "_").replace(":", "_") + ".json"), "w") as f:
                json.dump(res, f, indent=2)
        if a.emit:
            # Twice: a Xen console line landing in the middle of one of our
            # lines spoils that copy (lab/run detects it and uses the other).
            emit(res)
            emit(res)
    bad = [r["scenario"] for r in results if not r["ok"]]
    hvlab.log(f"{len(results) - len(bad)} passed, {len(bad)} failed" + (f": {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
