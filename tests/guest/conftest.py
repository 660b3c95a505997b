"""Fixtures for the test-guest tests (lab/guest).  Tests that boot the guest
are marked ``guest``; they need qemu-system-x86_64 and fail (not skip) if it
is missing."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (HERE, ROOT / "lab" / "guest"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from hvfg_qemu import Guest, build_guest, find_qemu  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "guest: boots the hvfilter test guest under QEMU TCG (no Xen needed)"
    )


@pytest.fixture(scope="session")
def guest_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_guest(tmp_path_factory.mktemp("guest-build"))


@pytest.fixture
def boot(guest_elf: Path, tmp_path: Path) -> Iterator[Callable[..., Guest]]:
    """boot("nproc=8 quiet=1") -> a running Guest, killed at the end."""
    find_qemu()  # a clear failure if QEMU is missing
    guests: list[Guest] = []

    def start(cmdline: str = "", mem_mb: int = 32) -> Guest:
        d = tmp_path / f"vm{len(guests)}"
        d.mkdir()
        g = Guest(guest_elf, cmdline, d, mem_mb=mem_mb)
        guests.append(g)
        return g

    yield start
    for g in guests:
        g.close()
