"""The ``hvfilter`` command line.

Usage::

    hvfilter demo                      # simulator unless on a patched Xen dom0
    hvfilter demo --domain 5 --cr3 0x1f4d3000 --bp-gpa 0x12344b0 --seconds 10
    hvfilter info --domain 5           # version, limits, capabilities
    hvfilter rules 5 [--json]          # what is installed (as far as Xen reports it)
    hvfilter stats 5 [--json]          # counters per kind and per rule, conservation
    hvfilter bench --json bench/results/python.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from hvfilter import demo
from hvfilter.errors import HvfilterError
from hvfilter.hypervisor import open
from hvfilter.stats import Info
from hvfilter.workload import GuestWorkload


def _int(s: str) -> int:
    return int(s, 0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hvfilter",
        description="Hypervisor-side event filters for VM introspection on Xen.")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="process-bound monitoring of one process among many",
                       description=demo.__doc__)
    d.add_argument("--backend", choices=("auto", "xen", "sim"), default="auto",
                   help="xen needs --domain; auto uses Xen when possible (default)")
    d.add_argument("--domain", type=int, help="Xen: the domain id to filter")
    d.add_argument("--cr3", type=_int, action="append", default=[],
                   help="Xen: a CR3 value (DTB) of the target process; repeatable")
    d.add_argument("--bp-gpa", type=_int, help="Xen: guest-physical address of your breakpoint")
    d.add_argument("--seconds", type=float, default=10.0, help="Xen: how long to watch")
    d.add_argument("--nproc", type=int, default=8,
                   help="sim: busy processes besides the target (the lab guest's nproc=)")
    d.add_argument("--quiet", type=int, default=4,
                   help="sim: the target runs one turn every K rounds (quiet=)")
    d.add_argument("--gap", type=int, help="sim: exact form: one target turn per M busy turns")
    d.add_argument("--calls", type=int, default=16, help="sim: kernel calls per turn (calls=)")
    d.add_argument("--no-kpti", action="store_true", help="sim: one CR3 write per turn (kpti=0)")
    d.add_argument("--rounds", type=int, default=20000, help="sim: rounds (rounds=)")
    d.add_argument("--vcpus", type=int, default=1, help="sim: virtual CPUs (the lab guest has 1)")
    d.add_argument("--show", type=int, default=20, help="events of the target to print")

    b = sub.add_parser("bench", help="the library's own costs (compile, simulator)",
                       description="Print a table of the library's costs and write JSON.")
    b.add_argument("--rounds", type=int, default=20000, help="workload rounds")
    b.add_argument("--json", type=Path, help="write the results to this file")

    i = sub.add_parser("info", help="hvfilter version, limits and capabilities of a domain")
    i.add_argument("--backend", choices=("auto", "xen", "sim"), default="auto")
    i.add_argument("--domain", type=int, default=1)
    for name, what in (("rules", "what is installed on a domain (as far as Xen reports it)"),
                       ("stats", "a domain's counters per event kind and per rule")):
        v = sub.add_parser(name, help=what, description=what)
        v.add_argument("domain", type=int, help="the domain id")
        v.add_argument("--backend", choices=("auto", "xen", "sim"), default="auto")
        v.add_argument("--json", action="store_true", help="print JSON")
    return p


def _view(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    from hvfilter import views
    with open(args.backend) as hyp:
        if hyp.backend == "sim":
            hyp.create_domain(args.domain)
        dom = hyp.domain(args.domain)
        v = views.rules_view(dom) if args.cmd == "rules" else views.stats_view(dom)
        v["backend"] = hyp.backend
        if args.json:
            out(json.dumps(v, indent=1))
        else:
            if hyp.backend == "sim":
                out(f"backend: sim ({hyp.fallback_reason or 'requested'}), "
                    "an empty simulated domain")
            out(views.format_rules(v) if args.cmd == "rules" else views.format_stats(v))
        return 0 if args.cmd == "rules" or v["conserved"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Example:
        >>> main(["demo", "--rounds", "100"])
        0

    """
    args = _parser().parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        if args.cmd == "demo":
            wl = GuestWorkload(nr_busy=args.nproc, quiet=args.quiet, gap=args.gap,
                               calls=args.calls, kpti=not args.no_kpti,
                               rounds=args.rounds, nr_vcpus=args.vcpus)
            res = demo.main(out, args.backend, args.domain, args.cr3, args.bp_gpa,
                            args.seconds, wl, args.show)
            return 0 if res.stats.conserved else 1
        if args.cmd == "bench":
            from hvfilter import bench
            bench.main(out, args.json, args.rounds)
            return 0
        if args.cmd in ("rules", "stats"):
            return _view(args, out)
        with open(args.backend) as hyp:
            if hyp.backend == "sim":
                hyp.create_domain(args.domain)
                out(f"backend: sim ({hyp.fallback_reason or 'requested'})")
            else:
                out("backend: xen")
            info = hyp.domain(args.domain).info()
            for f in attrs.fields(Info):
                v = getattr(info, f.name)
                if isinstance(v, frozenset):
                    v = ", ".join(x.name for x in sorted(v))
                elif f.name == "abi_version":
                    v = f"{v:#x}"
                out(f"  {f.name:<16} {v}")
        return 0
    except HvfilterError as e:
        print(f"hvfilter: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"hvfilter: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as Unix tools do.
        sys.stdout = None
        return 0
