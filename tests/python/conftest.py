"""Fixtures shared by the Xen-free test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

import hvfilter as hv

# Modest budgets: the machine is shared with a Xen build and QEMU.
settings.register_profile(
    "default", max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile("default")


@pytest.fixture
def hyp() -> Iterator[hv.Hypervisor]:
    with hv.open("sim") as h:
        yield h


@pytest.fixture
def dom(hyp: hv.Hypervisor) -> hv.Domain:
    return hyp.create_domain(5, vcpus=2)
