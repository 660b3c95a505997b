"""Administrator views of a domain's filter: what is installed, what it counted.

``hvfilter rules DOMAIN`` and ``hvfilter stats DOMAIN`` print these; with
``--json`` they print the dictionaries themselves.  Everything comes from the
hypervisor (``get_info`` and ``stats_get``); the hypervisor does not return
rule contents or set contents, so the views show what it reports (counts,
sizes, the table generation) and say so.  The program that installed the
table has its text (``Program.dump()``).

Example:
    >>> with hvfilter.open() as hyp:
    ...     print(format_stats(stats_view(hyp.domain(5))))

"""

from __future__ import annotations

from typing import Any

import attrs

from hvfilter.hypervisor import Domain
from hvfilter.stats import Counts

#: Said with every rules view: what the hypervisor cannot tell.
NOT_REPORTED = ("the hypervisor reports counts only: rule conditions, actions and set "
                "contents (so the sets' fill) are not returned; the program that "
                "installed the table has them (Program.dump())")

_COLUMNS = ("seen", "forwarded", "passed", "emulated", "sampled_out", "fallbacks")


def _counts(c: Counts) -> dict[str, Any]:
    d: dict[str, Any] = attrs.asdict(c)
    d["conserved"] = c.conserved
    return d


def rules_view(dom: Domain) -> dict[str, Any]:
    """What is installed on ``dom``: generation, rule and set counts, per-rule counters."""
    info = dom.info()
    st = dom.stats()
    return {
        "domain": dom.domid,
        "generation": info.generation,
        "installed": info.nr_rules > 0 or info.nr_sets > 0,
        "nr_rules": info.nr_rules,
        "nr_sets": info.nr_sets,
        "max_sets": info.max_sets,
        "nr_breakpoints": info.nr_breakpoints,
        "mem_bytes_all_domains": info.mem_bytes,
        "rules": [dict(_counts(c), rule=i) for i, c in enumerate(st.rules)],
        "unmatched": _counts(st.unmatched),
        "not_reported": NOT_REPORTED,
    }


def stats_view(dom: Domain) -> dict[str, Any]:
    """The counters of ``dom`` per event kind and per rule, with the conservation check.

    ``conserved`` is the law every counter obeys at all times (seen = forwarded
    + passed + emulated + sampled_out).  ``rules_add_up`` (rules plus unmatched
    equal the kinds' total) holds only when the statistics were reset as the
    table was installed: kind counters span tables, rule counters do not.
    """
    st = dom.stats()
    by_rule = st.unmatched
    for c in st.rules:
        by_rule = by_rule + c
    return {
        "domain": dom.domid,
        "generation": st.generation,
        "kinds": {k.name: _counts(c) for k, c in sorted(st.kinds.items()) if c.seen},
        "total": _counts(st.total),
        "rules": [dict(_counts(c), rule=i) for i, c in enumerate(st.rules)],
        "unmatched": _counts(st.unmatched),
        "conserved": (all(c.conserved for c in st.kinds.values())
                      and all(c.conserved for c in st.rules) and st.unmatched.conserved),
        "rules_add_up": by_rule == st.total,
    }


def _table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    head = f"{'':<18}" + "".join(f"{c.replace('_', ' '):>12}" for c in _COLUMNS) + "  conserved"
    out = [head, "-" * len(head)]
    for name, d in rows:
        out.append(f"{name:<18}" + "".join(f"{d[c]:>12,}" for c in _COLUMNS)
                   + f"  {'yes' if d['conserved'] else 'NO'}")
    return out


def _rule_rows(v: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"rule {r['rule']}", r) for r in v["rules"]] + [("unmatched", v["unmatched"])]


def format_rules(v: dict[str, Any]) -> str:
    """The rules view as text."""
    lines = [f"domain {v['domain']}: table generation {v['generation']}, "
             + (f"{v['nr_rules']} rules, {v['nr_sets']} of {v['max_sets']} sets"
                if v["installed"] else "no table installed (every event is forwarded)"),
             f"breakpoints registered: {v['nr_breakpoints']}",
             f"hvfilter memory (all domains): {v['mem_bytes_all_domains']:,} bytes"]
    if v["rules"]:
        lines += ["", "per rule, for this generation:"]
        lines += _table(_rule_rows(v))
    lines += ["", f"note: {v['not_reported']}"]
    return "\n".join(lines)


def format_stats(v: dict[str, Any]) -> str:
    """The stats view as text."""
    lines = [f"domain {v['domain']}: table generation {v['generation']}", "", "per event kind:"]
    lines += _table([(k, d) for k, d in v["kinds"].items()] + [("total", v["total"])])
    if v["rules"]:
        lines += ["", "per rule (this generation):"]
        lines += _table(_rule_rows(v))
    lines += ["",
              f"conservation (seen = forwarded + passed + emulated + sampled out): "
              f"{'holds' if v['conserved'] else 'VIOLATED'}",
              f"rules + unmatched = kinds' total: {'yes' if v['rules_add_up'] else 'no'}"
              + ("" if v["rules_add_up"] else
                 " (expected when the statistics were not reset as the table was installed)")]
    return "\n".join(lines)


__all__ = ["NOT_REPORTED", "format_rules", "format_stats", "rules_view", "stats_view"]
