"""The README's example runs as written (on the simulator here)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "no python example in README.md"
    assert len(blocks[0].splitlines()) <= 22
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(00) on CR3_WRITE -> forward" in out
    assert "event kind" in out


def test_tutorial_examples_run(capsys):
    text = (README.parent / "docs" / "tutorial.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    ns: dict[str, object] = {}
    for block in blocks[:5]:          # the later ones need a live Xen or earlier state
        exec(compile(block, "docs/tutorial.md", "exec"), ns)
    out = capsys.readouterr().out
    assert "FORWARD 0\nPASS 2\nEMULATE 4" in out
