"""The shim's raw op on the simulator: the handler's own checks, in Xen's order.

These mirror the lab's ``hvfilter_badinput`` scenario, which sends the same
payloads to the real hypervisor: the simulator must answer with the same
errno (and change nothing), so that it stays a faithful model of the handler.
"""

from __future__ import annotations

import errno
import struct

import pytest

from hvfilter._lowlevel import ShimControl
from hvfilter.errors import HvfilterError

DOM = 7
ABI = 0x0001_0000


@pytest.fixture
def ctl():
    c = ShimControl.open_sim(0, 0, 0, False, False, 1)
    c.sim_domain_create(DOM, 1, True)
    yield c
    c.close()


def errno_of(fn) -> int:
    try:
        fn()
    except HvfilterError as e:
        return e.errno or -1
    return 0


def tail(u: bytes, at: int) -> bytes:
    b = bytearray(u.ljust(64, b"\0"))
    b[at] = 1
    return bytes(b)


@pytest.mark.parametrize(("op", "union", "want"), [
    (1, tail(b"", 40), errno.EINVAL),                          # table_replace
    (2, tail(struct.pack("<IIQ", 0, 1, 0), 16), errno.EINVAL),  # set_add
    (4, tail(b"", 63), errno.EINVAL),                          # set_flush
    (5, tail(b"", 32), errno.EINVAL),                          # bp_add
    (7, tail(b"", 8), errno.EINVAL),                           # stats_get
    (8, tail(b"", 8), errno.EINVAL),                           # stats_reset
])
def test_nonzero_union_tail_is_refused(ctl, op, union, want) -> None:
    assert errno_of(lambda: ctl.raw_op(DOM, op, union)) == want


def test_table_counts_are_bounded_before_handles_are_read(ctl) -> None:
    assert errno_of(lambda: ctl.raw_op(DOM, 1, struct.pack("<IIII", 65, 0, 0, 0))) == errno.E2BIG
    assert errno_of(lambda: ctl.raw_op(DOM, 1, struct.pack("<IIII", 0, 9, 0, 0))) == errno.E2BIG


def test_set_batch_size_is_checked_before_the_set(ctl) -> None:
    # No table installed: Xen refuses the batch size first (-EINVAL), then the set (-ENOENT).
    assert errno_of(lambda: ctl.raw_op(DOM, 2, struct.pack("<IIQ", 0, 0, 0))) == errno.EINVAL
    assert errno_of(lambda: ctl.set_keys(DOM, 0, [1], False)) == errno.ENOENT


def test_abi_major_and_stats_reset_buffer(ctl) -> None:
    assert errno_of(lambda: ctl.raw_op(DOM, 1, b"", 0x0002_0000)) == errno.EPROTONOSUPPORT
    assert errno_of(lambda: ctl.raw_op(DOM, 8, struct.pack("<Q", 0x1000))) == errno.EINVAL
    assert errno_of(lambda: ctl.raw_op(DOM, 9)) == errno.EINVAL


def test_raw_get_info_returns_the_union(ctl) -> None:
    u = ctl.raw_op(DOM, 0)
    assert struct.unpack_from("<I", u)[0] == ABI
