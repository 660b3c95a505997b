"""``hvfilter rules`` / ``hvfilter stats``: the administrator views, on the simulator."""

from __future__ import annotations

import json

import hvfilter as hv
from hvfilter import NEW, OLD, Kind, cli, forward, on, pass_, views
from hvfilter.workload import GuestWorkload

WL = GuestWorkload(nr_busy=4, quiet=1, calls=0, kpti=True, rounds=50, nr_vcpus=1)


def _prog() -> hv.Program:
    t = WL.process_set(0, capacity=16)
    return hv.compile([
        on(Kind.CR3_WRITE).when(NEW.in_(t) ^ OLD.in_(t)).then(forward),
        on(Kind.CR3_WRITE).then(pass_),
    ])


def test_rules_view_empty_domain() -> None:
    with hv.open("sim") as hyp:
        v = views.rules_view(hyp.create_domain(3))
    assert v["installed"] is False and v["nr_rules"] == 0 and v["rules"] == []
    assert "not returned" in v["not_reported"]
    assert "no table installed" in views.format_rules(v)


def test_rules_and_stats_views_after_install_and_events() -> None:
    prog = _prog()
    with hv.open("sim") as hyp:
        dom = hyp.create_domain(3)
        dom.reset_stats()
        with dom.install(prog):
            dom.feed(list(WL.iter_events()))
            r = views.rules_view(dom)
            s = views.stats_view(dom)
            direct = dom.stats()
    assert r["installed"] and r["nr_rules"] == len(prog.table.rules) and r["nr_sets"] == 1
    assert r["generation"] == 1 and len(r["rules"]) == r["nr_rules"]
    cr3 = direct.kinds[Kind.CR3_WRITE]
    assert s["kinds"]["CR3_WRITE"]["seen"] == cr3.seen > 0
    assert s["kinds"]["CR3_WRITE"]["forwarded"] == cr3.forwarded > 0
    assert s["conserved"] and s["rules_add_up"]
    assert sum(x["seen"] for x in s["rules"]) + s["unmatched"]["seen"] == cr3.seen
    text = views.format_stats(s)
    assert "CR3_WRITE" in text and "holds" in text
    assert "rule 0" in views.format_rules(r)


def test_stats_view_after_replace_without_reset() -> None:
    prog = _prog()
    with hv.open("sim") as hyp:
        dom = hyp.create_domain(3)
        dom.install(prog)
        dom.feed(list(WL.iter_events()))
        dom.install(prog)            # new generation: rule counters restart, kinds do not
        s = views.stats_view(dom)
    assert s["generation"] == 2 and s["conserved"] and not s["rules_add_up"]
    assert "not reset" in views.format_stats(s)


def test_cli_rules_and_stats_json(capsys) -> None:
    assert cli.main(["rules", "4", "--backend", "sim", "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["domain"] == 4 and v["backend"] == "sim" and v["nr_rules"] == 0
    assert cli.main(["stats", "4", "--backend", "sim", "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["conserved"] is True and v["kinds"] == {}


def test_cli_stats_text(capsys) -> None:
    assert cli.main(["stats", "4", "--backend", "sim"]) == 0
    out = capsys.readouterr().out
    assert "backend: sim" in out and "conservation" in out
