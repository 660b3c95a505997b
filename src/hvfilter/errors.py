"""The exceptions of hvfilter and the one errno-to-exception table.

Every failure of a hypervisor operation arrives as a negative errno value
from the C shim.  :func:`error_for` turns it into an exception whose message
names the operation, the domain and the remedy.  :class:`HvfilterError` is the
base class of all of them and is never raised itself.

Example:
    >>> try:
    ...     hyp.domain(7).stats()
    ... except NoSuchDomainError as e:
    ...     print(e.errno, e.domain)

"""

from __future__ import annotations

import errno as _errno
import os
from typing import ClassVar


class HvfilterError(Exception):
    """Base class of every hvfilter error; never raised directly.

    Attributes:
        errno: the (positive) errno value behind the error, or None.
        op: the operation that failed, e.g. ``"table_replace"``.
        domain: the target domain id, or None.

    """

    remedy: ClassVar[str] = ""

    def __init__(self, message: str, *, errno: int | None = None, op: str | None = None,
                 domain: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.op = op
        self.domain = domain


class NotOnXenError(HvfilterError):
    """No usable Xen here: no libxencall, or no privcmd device (not dom0 on Xen)."""

    remedy = ("run in dom0 of a Xen host with the xen-privcmd driver loaded "
              "(libxencall1 installed), or use the simulator: hvfilter.open('sim')")


class NotPatchedError(HvfilterError):
    """The hypervisor does not know XEN_DOMCTL_hvfilter_op (-ENOSYS)."""

    remedy = "boot a Xen built with the hvfilter patches (make xen)"


class VersionMismatchError(HvfilterError):
    """Base of the two version mismatches."""


class DomctlVersionError(VersionMismatchError):
    """The domctl interface version differs from the hypervisor's (-EACCES)."""

    remedy = ("rebuild hvfilter against the libxen-dev of the running Xen "
              "(the domctl interface changes with every Xen release)")


class AbiVersionError(VersionMismatchError):
    """The hvfilter ABI version differs from the hypervisor's (-EPROTONOSUPPORT)."""

    remedy = "install the hvfilter release that matches the hypervisor's hvfilter patch"


class PermissionDeniedError(HvfilterError):
    """The caller may not do this (-EPERM), e.g. not dom0, or the target is dom0."""

    remedy = ("run as root in dom0 (under Flask, the caller needs the vm_event "
              "permission on the target); hvfilter never targets dom0 itself")


class NoSuchDomainError(HvfilterError):
    """The domain does not exist (-ESRCH)."""

    remedy = "check the domain id with `xl list`"


class UnsupportedError(HvfilterError):
    """Not supported here (-EOPNOTSUPP): a PV domain, or an event kind this CPU cannot raise."""

    remedy = ("use an HVM or PVH domain; check Info.kinds for the event kinds this CPU "
              "supports (single-step and mem_access need Intel VMX)")


class InvalidArgumentError(HvfilterError, ValueError):
    """The hypervisor rejected an argument (-EINVAL)."""

    remedy = "see the errors listed for this operation in the rule reference"


class InvalidRuleError(InvalidArgumentError):
    """A rule table that the hypervisor would reject (-EINVAL).

    Attributes:
        rule: index of the offending rule in the source rule list, or None.
        cond: index of the offending condition in the compiled rule, or None.

    """

    remedy = "fix the rule named above"

    def __init__(self, message: str, *, errno: int | None = _errno.EINVAL,
                 op: str | None = "compile", domain: int | None = None,
                 rule: int | None = None, cond: int | None = None) -> None:
        super().__init__(message, errno=errno, op=op, domain=domain)
        self.rule = rule
        self.cond = cond


class LimitExceededError(InvalidRuleError):
    """A limit of the header is exceeded (-E2BIG) or a set is full (-ENOSPC)."""

    remedy = "stay within hvfilter.LIMITS (rules, conditions, sets, set capacity)"


class UnsupportedRuleError(InvalidRuleError, UnsupportedError):
    """A rule names an event kind the target CPU cannot raise (-EOPNOTSUPP)."""

    remedy = UnsupportedError.remedy


class NotFoundError(HvfilterError, LookupError):
    """No table installed, no such set, key or breakpoint (-ENOENT)."""

    remedy = "install a table first; check the set name, key or breakpoint address"


class AlreadyExistsError(HvfilterError):
    """A breakpoint is already registered at this address (-EEXIST)."""

    remedy = "remove the old breakpoint first"


class OutOfMemoryError(HvfilterError, MemoryError):
    """The hypervisor (or the simulator) ran out of memory (-ENOMEM)."""

    remedy = "use smaller sets"


class StateError(HvfilterError):
    """The object is in the wrong state for this call."""


class ClosedError(StateError):
    """Use of a hypervisor handle after close() (-EBADF)."""

    remedy = "open a new handle with hvfilter.open()"


class NotInstalledError(StateError):
    """The rule table was already uninstalled or replaced."""

    remedy = "install the program again with Domain.install()"


#: The errno-to-exception table.  Some errno values mean different things for
#: opening the hypervisor and for operations on a domain.
ERRNO_TABLE: dict[int, type[HvfilterError]] = {
    _errno.ENOSYS: NotPatchedError,
    _errno.EACCES: DomctlVersionError,
    _errno.EPROTONOSUPPORT: AbiVersionError,
    _errno.EPERM: PermissionDeniedError,
    _errno.ESRCH: NoSuchDomainError,
    _errno.EOPNOTSUPP: UnsupportedError,
    _errno.EINVAL: InvalidArgumentError,
    _errno.E2BIG: LimitExceededError,
    _errno.ENOSPC: LimitExceededError,
    _errno.ENOENT: NotFoundError,
    _errno.EEXIST: AlreadyExistsError,
    _errno.ENOMEM: OutOfMemoryError,
    _errno.EBADF: ClosedError,
}

#: Opening the xen backend.
OPEN_ERRNO_TABLE: dict[int, type[HvfilterError]] = {
    _errno.ELIBACC: NotOnXenError,
    _errno.ENOENT: NotOnXenError,
    _errno.ENODEV: NotOnXenError,
    _errno.ENXIO: NotOnXenError,
    _errno.EACCES: PermissionDeniedError,
    _errno.EPERM: PermissionDeniedError,
}

_WHAT = {
    _errno.ENOSYS: "the hypervisor is not patched with hvfilter",
    _errno.EACCES: "domctl interface version mismatch",
    _errno.EPROTONOSUPPORT: "hvfilter ABI version mismatch",
    _errno.EPERM: "permission denied",
    _errno.ESRCH: "no such domain",
    _errno.EOPNOTSUPP: "not supported for this domain or CPU",
    _errno.EINVAL: "invalid argument",
    _errno.E2BIG: "a limit is exceeded",
    _errno.ENOSPC: "no space left (set or breakpoint table full)",
    _errno.ENOENT: "not found",
    _errno.EEXIST: "already exists",
    _errno.ENOMEM: "out of memory",
    _errno.EBADF: "the handle is closed",
}

_OPEN_WHAT = {
    _errno.ELIBACC: "libxencall.so.1 cannot be loaded (install libxencall1)",
    _errno.ENOENT: "no /dev/xen/privcmd: not running on Xen, or not in dom0",
    _errno.ENODEV: "no /dev/xen/privcmd: not running on Xen, or not in dom0",
    _errno.ENXIO: "no /dev/xen/privcmd: not running on Xen, or not in dom0",
    _errno.EACCES: "cannot open /dev/xen/privcmd: permission denied",
    _errno.EPERM: "cannot open /dev/xen/privcmd: permission denied",
}


def error_for(rc: int, op: str, domain: int | None = None,
              detail: str | None = None) -> HvfilterError:
    """The exception for a shim result code.

    Args:
        rc: the negative errno value returned by the shim.
        op: the operation, e.g. ``"set_add"`` or ``"open"``.
        domain: the target domain id, if any.
        detail: more about this failure, put before the remedy.

    Returns:
        An instance of the class that ``ERRNO_TABLE`` (or, for ``op == "open"``,
        ``OPEN_ERRNO_TABLE``) gives for ``-rc``; errno values outside the
        tables give :class:`HvfilterError` subclass :class:`UnexpectedError`.

    Example:
        >>> error_for(-errno.ESRCH, "stats_get", 7)
        NoSuchDomainError('stats_get on domain 7: no such domain (ESRCH); ...')

    """
    err = -rc
    if op == "open":
        cls = OPEN_ERRNO_TABLE.get(err, NotOnXenError)
        what = _OPEN_WHAT.get(err, os.strerror(err))
    else:
        cls = ERRNO_TABLE.get(err, UnexpectedError)
        what = _WHAT.get(err, os.strerror(err))
        if op == "table_replace" and cls is InvalidArgumentError:
            cls = InvalidRuleError
            what = "the hypervisor rejected the rule table"
    where = f"{op} on domain {domain}" if domain is not None else op
    name = _errno.errorcode.get(err, str(err))
    msg = f"{where}: {what} ({name})"
    if detail:
        msg += f": {detail}"
    if cls.remedy:
        msg += f"; remedy: {cls.remedy}"
    return cls(msg, errno=err, op=op, domain=domain)


class UnexpectedError(HvfilterError):
    """An errno value the header does not document for this operation."""

    remedy = "report this as a bug, with the message"
