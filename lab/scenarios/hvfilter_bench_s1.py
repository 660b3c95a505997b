"""The benchmark (hvfilter_bench.py) at the target share 1% only.

One scenario per share keeps each within the lab's per-scenario deadline;
`make bench` runs all three in one boot.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hvfilter_bench  # noqa: E402

TIMEOUT = hvfilter_bench.TIMEOUT


def run(ctx) -> None:  # type: ignore[no-untyped-def]
    hvfilter_bench.run_shares(ctx, {"1%": hvfilter_bench.SHARES["1%"]})
