"""The benchmark's behaviour, small and fast (the timing is make bench's business).

One repeat of A, B, C and D at the 1 % share with few rounds: B and C must
deliver identical target events, B must receive every CR3 write and every
kernel-function call in dom0, C exactly what it delivers, D nothing, and
every guest must finish with a clean self-check.  The same code as
hvfilter_bench.py, so what make bench measures is what is checked here.
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hvfilter_bench  # noqa: E402

TIMEOUT = 400


def run(ctx) -> None:  # type: ignore[no-untyped-def]
    # The module is shared with the benchmark scenarios of the same boot:
    # change its settings on a fresh copy and put the defaults back after.
    hb = importlib.reload(hvfilter_bench)
    try:
        hb.REPEATS = 1
        hb.ROUNDS = 100
        hb.WORK = 16
        hb.run_shares(ctx, {"1%": hb.SHARES["1%"]})
    finally:
        importlib.reload(hvfilter_bench)
