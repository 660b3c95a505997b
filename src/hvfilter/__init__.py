"""hvfilter: hypervisor-side event filters for VM introspection on Xen.

Write filter rules in Python, compile them (pure, no privileges), install
them into Xen per domain, and receive only the events your VMI tool needs.
Without Xen, the same rules run on the built-in simulator, which executes
the hypervisor's own evaluator over recorded or generated event streams.

Example:
    >>> import hvfilter as hv
    >>> from hvfilter import CR3, NEW, OLD, Kind, on, forward, pass_, emulate
    >>> target = hv.process("target", 0x1_0000_2000)
    >>> prog = hv.compile([
    ...     on(Kind.CR3_WRITE).when(NEW.in_(target) ^ OLD.in_(target)).then(forward),
    ...     on(Kind.CR3_WRITE).then(pass_),
    ...     on(Kind.BREAKPOINT).when(CR3.in_(target)).then(forward),
    ...     on(Kind.BREAKPOINT).then(emulate),
    ... ])
    >>> print(prog.dump())

"""

from hvfilter._raw import RawEvent
from hvfilter.abi import LIMITS, ActionCode, Cmp, Field, Kind, Limits
from hvfilter.compiler import Problem, Program, check_table, compile, encode_unchecked
from hvfilter.errors import (
    AbiVersionError,
    AlreadyExistsError,
    ClosedError,
    DomctlVersionError,
    HvfilterError,
    InvalidArgumentError,
    InvalidRuleError,
    LimitExceededError,
    NoSuchDomainError,
    NotFoundError,
    NotInstalledError,
    NotOnXenError,
    NotPatchedError,
    OutOfMemoryError,
    PermissionDeniedError,
    StateError,
    UnexpectedError,
    UnsupportedError,
    UnsupportedRuleError,
    VersionMismatchError,
)
from hvfilter.events import (
    Breakpoint,
    Cpuid,
    Cr3Switch,
    CrWrite,
    Event,
    MsrWrite,
    OtherEvent,
    raw_event,
)
from hvfilter.hypervisor import (
    Domain,
    EventSource,
    Hypervisor,
    Installation,
    InstalledSet,
    SimConfig,
    Subscription,
    Verdict,
    open,
)
from hvfilter.rules import (
    CPL,
    CR3,
    GFN,
    GLA,
    INDEX,
    KPTI_BIT,
    NEW,
    NOFLUSH_BIT,
    OLD,
    PCID_MASK,
    PROCESS_MASK,
    RIP,
    SUBINDEX,
    VCPU,
    Action,
    AllOf,
    AnyOf,
    Cond,
    Emulate,
    FieldRef,
    Forward,
    Pass,
    Rule,
    Sample,
    Test,
    ValueSet,
    always,
    emulate,
    forward,
    never,
    on,
    pass_,
    process,
    sample,
)
from hvfilter.stats import Counts, Info, Stats
from hvfilter.workload import GuestWorkload

__version__ = "0.1.0"

__all__ = [
    "CPL", "CR3", "GFN", "GLA", "INDEX", "KPTI_BIT", "LIMITS", "NEW", "NOFLUSH_BIT", "OLD",
    "PCID_MASK", "PROCESS_MASK", "RIP", "SUBINDEX", "VCPU", "AbiVersionError", "Action",
    "ActionCode", "AllOf", "AlreadyExistsError", "AnyOf", "Breakpoint", "ClosedError", "Cmp",
    "Cond", "Counts", "Cpuid", "Cr3Switch", "CrWrite", "Domain", "DomctlVersionError",
    "Emulate", "Event", "EventSource", "Field", "FieldRef", "Forward", "GuestWorkload",
    "HvfilterError", "Hypervisor", "Info", "Installation", "InstalledSet",
    "InvalidArgumentError", "InvalidRuleError", "Kind", "LimitExceededError", "Limits",
    "MsrWrite", "NoSuchDomainError", "NotFoundError", "NotInstalledError", "NotOnXenError",
    "NotPatchedError", "OtherEvent", "OutOfMemoryError", "Pass", "PermissionDeniedError",
    "Problem", "Program", "RawEvent", "Rule", "Sample", "SimConfig", "StateError", "Stats",
    "Subscription", "Test", "UnexpectedError", "UnsupportedError", "UnsupportedRuleError",
    "ValueSet", "Verdict",
    "VersionMismatchError", "__version__", "always", "check_table", "compile", "emulate",
    "encode_unchecked", "forward", "never", "on", "open", "pass_", "process", "raw_event",
    "sample",
]
