"""Low-level layer: the shim's operations, typed, one-to-one, raising.

Each function calls its ``_binding`` counterpart and turns a non-zero result
code into the exception of the errno table (``errors.error_for``), naming the
operation and the domain.  :class:`ShimControl` bundles them behind the
:class:`ControlPlane` protocol that the public layer uses.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from typing_extensions import Protocol

from hvfilter import _binding
from hvfilter._raw import RawInfo, RawStats, RawTable
from hvfilter.errors import ClosedError, error_for


class ControlPlane(Protocol):
    """The privileged operations on a hypervisor (real or simulated)."""

    name: str

    def get_info(self, domid: int) -> RawInfo:
        """XEN_HVFILTER_OP_get_info."""
        ...

    def table_replace(self, domid: int, table: RawTable) -> None:
        """XEN_HVFILTER_OP_table_replace."""
        ...

    def set_keys(self, domid: int, set_id: int, keys: Sequence[int], remove: bool) -> None:
        """XEN_HVFILTER_OP_set_add / set_remove."""
        ...

    def set_flush(self, domid: int, set_id: int) -> None:
        """XEN_HVFILTER_OP_set_flush."""
        ...

    def bp_add(self, domid: int, gpa: int, insn: bytes) -> None:
        """XEN_HVFILTER_OP_bp_add."""
        ...

    def bp_remove(self, domid: int, gpa: int) -> None:
        """XEN_HVFILTER_OP_bp_remove."""
        ...

    def stats_get(self, domid: int) -> RawStats:
        """XEN_HVFILTER_OP_stats_get."""
        ...

    def stats_reset(self, domid: int) -> None:
        """XEN_HVFILTER_OP_stats_reset."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def _check(rc: int, op: str, domid: int | None = None) -> None:
    if rc:
        raise error_for(rc, op, domid)


class ShimControl:
    """The control plane over the C shim, for both the xen and the sim backend."""

    def __init__(self, handle: _binding.Handle) -> None:
        self._h: _binding.Handle | None = handle
        self.name = "sim" if handle.is_sim else "xen"

    @classmethod
    def open_xen(cls) -> ShimControl:
        """Open libxencall and privcmd.

        Raises:
            NotOnXenError: no libxencall or no privcmd device.
            PermissionDeniedError: privcmd exists but may not be opened.

        """
        rc, h = _binding.open_xen()
        _check(rc, "open")
        assert h is not None
        return cls(h)

    @classmethod
    def open_sim(cls, domctl_version: int, abi_version: int, kinds: int, unpatched: bool,
                 unprivileged: bool, seed: int) -> ShimControl:
        """Create a simulated hypervisor."""
        rc, h = _binding.open_sim(domctl_version, abi_version, kinds, unpatched,
                                  unprivileged, seed)
        _check(rc, "open")
        assert h is not None
        return cls(h)

    @property
    def handle(self) -> _binding.Handle:
        """The open handle.

        Raises:
            ClosedError: after :meth:`close`.

        """
        if self._h is None:
            raise ClosedError("the hypervisor handle is closed; remedy: "
                              f"{ClosedError.remedy}", errno=errno.EBADF, op="use")
        return self._h

    def get_info(self, domid: int) -> RawInfo:
        """XEN_HVFILTER_OP_get_info."""
        rc, info = _binding.op_get_info(self.handle, domid)
        if rc == -errno.EPROTONOSUPPORT and info is not None and info.abi_version:
            ours = _binding.const("XEN_HVFILTER_INTERFACE_VERSION")
            raise error_for(rc, "get_info", domid,
                            detail=f"the hypervisor speaks hvfilter ABI {info.abi_version:#x}, "
                                   f"this library {ours:#x}")
        _check(rc, "get_info", domid)
        assert info is not None
        return info

    def table_replace(self, domid: int, table: RawTable) -> None:
        """XEN_HVFILTER_OP_table_replace."""
        _check(_binding.op_table_replace(self.handle, domid, table), "table_replace", domid)

    def set_keys(self, domid: int, set_id: int, keys: Sequence[int], remove: bool) -> None:
        """XEN_HVFILTER_OP_set_add / set_remove."""
        _check(_binding.op_set_keys(self.handle, domid, set_id, keys, remove),
               "set_remove" if remove else "set_add", domid)

    def set_flush(self, domid: int, set_id: int) -> None:
        """XEN_HVFILTER_OP_set_flush."""
        _check(_binding.op_set_flush(self.handle, domid, set_id), "set_flush", domid)

    def bp_add(self, domid: int, gpa: int, insn: bytes) -> None:
        """XEN_HVFILTER_OP_bp_add."""
        _check(_binding.op_bp_add(self.handle, domid, gpa, insn), "bp_add", domid)

    def bp_remove(self, domid: int, gpa: int) -> None:
        """XEN_HVFILTER_OP_bp_remove."""
        _check(_binding.op_bp_remove(self.handle, domid, gpa), "bp_remove", domid)

    def stats_get(self, domid: int) -> RawStats:
        """XEN_HVFILTER_OP_stats_get."""
        rc, st = _binding.op_stats_get(self.handle, domid)
        _check(rc, "stats_get", domid)
        assert st is not None
        return st

    def stats_reset(self, domid: int) -> None:
        """XEN_HVFILTER_OP_stats_reset."""
        _check(_binding.op_stats_reset(self.handle, domid), "stats_reset", domid)

    def raw_op(self, domid: int, op: int, union: bytes = b"",
               abi_version: int | None = None) -> bytes:
        """Issue XEN_HVFILTER_OP ``op`` with a hand-made payload, unchecked.

        ``union`` is the 64-byte payload union as the hypervisor reads it
        (zero-extended), ``abi_version`` defaults to this library's.  This
        bypasses every check of the shim and of the Python layers, so that
        tests can show what the hypervisor itself refuses.  Returns the union
        as the hypervisor left it.

        Raises:
            HvfilterError: the subclass of the errno table for a non-zero result.

        """
        if abi_version is None:
            abi_version = _binding.const("XEN_HVFILTER_INTERFACE_VERSION")
        rc, out = _binding.op_raw(self.handle, domid, op, abi_version, union)
        _check(rc, f"raw op {op}", domid)
        return out

    def sim_domain_create(self, domid: int, nr_vcpus: int, hvm: bool) -> None:
        """Create a simulated domain."""
        _check(_binding.sim_domain_create(self.handle, domid, nr_vcpus, hvm),
               "sim_domain_create", domid)

    def sim_domain_destroy(self, domid: int) -> None:
        """Destroy a simulated domain (its table and breakpoints go with it)."""
        _check(_binding.sim_domain_destroy(self.handle, domid), "sim_domain_destroy", domid)

    def close(self) -> None:
        """Release the handle (idempotent)."""
        if self._h is not None:
            self._h.close()
            self._h = None
