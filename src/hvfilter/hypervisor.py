"""Hypervisor, domains, installed rule tables and event subscriptions.

Example:
    >>> import hvfilter as hv
    >>> with hv.open() as hyp:                       # Xen if here, else the simulator
    ...     dom = hyp.domain(5)
    ...     with dom.install(hv.compile(rules)) as inst:   # removed again on exit
    ...         inst.set("target").add(new_cr3)
    ...         for ev in dom.subscribe(hv.Cr3Switch, hv.Breakpoint, process="target"):
    ...             print(ev)

The control plane (installing tables, sets, breakpoints, statistics) goes
through :class:`~hvfilter._lowlevel.ControlPlane`; the events that the filter
forwards come from an :class:`EventSource`: the simulator's own on the
``sim`` backend, the LibVMI adapter on Xen.

"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Literal

import attrs
from typing_extensions import Protocol, Self

from hvfilter import _binding
from hvfilter._lowlevel import ShimControl
from hvfilter._raw import RawEvent, RawTable, RawVerdict
from hvfilter.abi import LIMITS, ActionCode, Kind, kinds_bitmap
from hvfilter.compiler import Program
from hvfilter.errors import (
    ClosedError,
    HvfilterError,
    InvalidArgumentError,
    NotInstalledError,
    NotOnXenError,
    UnsupportedError,
    error_for,
)
from hvfilter.events import EVENT_KINDS, Event, from_raw, to_raw
from hvfilter.rules import ValueSet
from hvfilter.stats import Info, Stats
from hvfilter.workload import GuestWorkload

CHUNK = 4096


class EventSource(Protocol):
    """Where a domain's forwarded events come from (the monitor ring consumer).

    The simulator implements it in-process.  On Xen, a LibVMI adapter
    implements it: ``subscribe`` registers a ``RegEvent(X86Reg.CR3,
    RegAccess.W, cb)`` / ``IntEvent(cb)``; ``listen`` runs
    ``vmi.listen(timeout_ms)`` and its callbacks call ``deliver`` with the
    event converted to a :class:`RawEvent`.

    Example:
        >>> dom.attach_source(MyLibvmiSource(vmi))   # then dom.subscribe(...) as usual

    """

    def subscribe(self, kinds: frozenset[Kind]) -> None:
        """Make sure events of these kinds reach ``listen``."""
        ...

    def listen(self, timeout: float | None,
               deliver: Callable[[RawEvent], bool] | None) -> int:
        """Deliver forwarded events for up to ``timeout`` seconds.

        ``deliver`` returns True to stop early; None drops the events (the
        statistics still count them).  Exceptions it raises must
        reach the caller of ``listen`` unchanged (store them while inside C,
        re-raise after C returns).  Returns the number of events delivered.
        """
        ...

    @property
    def exhausted(self) -> bool:
        """True when no event can ever come again (a replay that ended)."""
        ...


@attrs.frozen
class Verdict:
    """The filter's decision for one event fed to the simulator.

    Attributes:
        action: FORWARD, PASS or EMULATE (sampled-out events show PASS).
        rule: index of the deciding rule in the compiled table, None if none.
        insn: for EMULATE, the registered instruction bytes.

    """

    action: ActionCode
    rule: int | None
    insn: bytes = b""

    @classmethod
    def from_raw(cls, v: RawVerdict) -> Verdict:
        """From the evaluator's ``struct hvf_verdict``."""
        return cls(ActionCode(v.action), None if v.rule < 0 else v.rule, v.insn)


@attrs.frozen
class SimConfig:
    """The simulated hypervisor's personality.

    The defaults model the hypervisor this build targets (patched Xen 4.17,
    this ABI, every event kind).  The other values model other hypervisors,
    to test a tool's error handling offline.

    Example:
        >>> amd = frozenset(k for k in Kind if k not in (Kind.SINGLESTEP, Kind.MEM_ACCESS))
        >>> hyp = hvfilter.open("sim", sim=SimConfig(kinds=amd))

    Args:
        domctl_version: the domctl interface version it accepts (0: ours).
        abi_version: its hvfilter ABI version (0: ours).
        kinds: the event kinds its CPU can raise (None: all; e.g. AMD lacks
            SINGLESTEP and MEM_ACCESS).
        unpatched: behave as a Xen without hvfilter.
        unprivileged: behave as if the caller were not privileged.
        seed: hash seed.

    """

    domctl_version: int = 0
    abi_version: int = 0
    kinds: frozenset[Kind] | None = None
    unpatched: bool = False
    unprivileged: bool = False
    seed: int = 0


class _SimSource:
    """The simulator's event source: replays fed events and workloads."""

    def __init__(self, ctl: ShimControl, domid: int) -> None:
        self._ctl = ctl
        self._domid = domid
        self._inputs: deque[GuestWorkload | Iterator[RawEvent]] = deque()
        self._gen: _binding.CWorkload | Iterator[RawEvent] | None = None
        self._buf = _binding.EventBuffer(CHUNK)
        self._pos = 0

    def subscribe(self, kinds: frozenset[Kind]) -> None:
        return None

    def play(self, source: GuestWorkload | Iterable[Event | RawEvent]) -> None:
        if isinstance(source, GuestWorkload):
            self._inputs.append(source)
        else:
            self._inputs.append(to_raw(e) for e in source)

    @property
    def exhausted(self) -> bool:
        return self._pos >= self._buf.length and self._gen is None and not self._inputs

    def _refill(self) -> bool:
        while True:
            if self._gen is None:
                if not self._inputs:
                    return False
                nxt = self._inputs.popleft()
                self._gen = nxt.generator() if isinstance(nxt, GuestWorkload) else nxt
            if isinstance(self._gen, _binding.CWorkload):
                n = self._gen.next_into(self._buf)
            else:
                chunk = [e for _, e in zip(range(CHUNK), self._gen, strict=False)]
                self._buf.fill(chunk)
                n = self._buf.length
            self._pos = 0
            if n:
                return True
            self._gen = None

    def listen(self, timeout: float | None,
               deliver: Callable[[RawEvent], bool] | None) -> int:
        if self._pos >= self._buf.length and not self._refill():
            return 0
        count = 0

        def one(ev: RawEvent, v: RawVerdict) -> bool:
            nonlocal count
            count += 1
            assert deliver is not None
            return deliver(ev)

        rc, done, error = _binding.sim_feed(self._ctl.handle, self._domid, self._buf,
                                            self._pos, one if deliver else None)
        # The event whose callback stopped or raised was consumed: resume after it.
        self._pos += done
        if error is not None:
            raise error
        if rc:
            self._pos += 1          # skip the event Xen could never raise, go on after it
            raise error_for(rc, "sim_feed", self._domid)
        return count

    def feed(self, events: Sequence[RawEvent]) -> list[RawVerdict]:
        out: list[RawVerdict] = []
        buf = _binding.EventBuffer(max(1, min(CHUNK, len(events))))
        for i in range(0, len(events), CHUNK):
            buf.fill(events[i:i + CHUNK])
            rc, _, _ = _binding.sim_feed(self._ctl.handle, self._domid, buf, 0, None, out)
            if rc:
                raise error_for(rc, "sim_feed", self._domid)
        return out


class InstalledSet:
    """A value set of an installed table; changes take effect at once.

    Example:
        >>> s = inst.set("target")
        >>> s.add(0x1f4d3000)       # a new process joined
        >>> 0x1f4d3000 in s
        True

    """

    def __init__(self, inst: Installation, set_id: int, vs: ValueSet) -> None:
        self._inst = inst
        self.set_id = set_id
        self.name = vs.name
        self.mask = vs.mask
        self.capacity = vs.capacity
        self._keys = {v & vs.mask for v in vs.values}

    def add(self, *values: int) -> None:
        """Add values (all or nothing).

        Raises:
            LimitExceededError: the set would exceed its capacity (ENOSPC).
            NotInstalledError: the table is no longer installed.

        """
        dom = self._inst._active_domain()
        dom._ctl.set_keys(dom.domid, self.set_id, list(values), remove=False)
        self._keys.update(v & self.mask for v in values)

    def remove(self, *values: int) -> None:
        """Remove values (all or nothing).

        Raises:
            NotFoundError: a value is not in the set.

        """
        dom = self._inst._active_domain()
        dom._ctl.set_keys(dom.domid, self.set_id, list(values), remove=True)
        self._keys.difference_update(v & self.mask for v in values)

    def flush(self) -> None:
        """Remove every value."""
        dom = self._inst._active_domain()
        dom._ctl.set_flush(dom.domid, self.set_id)
        self._keys.clear()

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and (value & self.mask) in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> frozenset[int]:
        """The (masked) keys as last set through this handle."""
        return frozenset(self._keys)


class Installation:
    """An installed program; a context manager that uninstalls on exit.

    Exiting the ``with`` block removes the table, also when an exception
    is on its way out.  Replacing the program is atomic.

    Example:
        >>> with dom.install(prog) as inst:
        ...     inst.set("target").add(new_dtb)
        ...     inst.replace(hvfilter.compile(stricter_rules))
        ...     print(inst.stats().table())

    """

    def __init__(self, domain: Domain, program: Program) -> None:
        self.domain = domain
        self.program = program
        self._sets = {s.name: InstalledSet(self, i, s) for i, s in enumerate(program.sets)}
        self.active = True

    def _active_domain(self) -> Domain:
        if not self.active:
            raise NotInstalledError(
                f"domain {self.domain.domid}: this program is no longer installed; "
                f"remedy: {NotInstalledError.remedy}", op="set", domain=self.domain.domid)
        return self.domain

    def set(self, name: str) -> InstalledSet:
        """The installed set called ``name``.

        Raises:
            KeyError: the program has no such set.

        """
        return self._sets[name]

    @property
    def sets(self) -> dict[str, InstalledSet]:
        """All installed sets by name."""
        return dict(self._sets)

    def stats(self) -> Stats:
        """The domain's statistics (see :meth:`Domain.stats`)."""
        return self._active_domain().stats()

    def replace(self, program: Program) -> None:
        """Atomically replace the installed table with another program.

        Rule statistics start from zero again; set contents are those of the
        new program.
        """
        dom = self._active_domain()
        dom._ctl.table_replace(dom.domid, program.table)
        self.program = program
        self._sets = {s.name: InstalledSet(self, i, s) for i, s in enumerate(program.sets)}

    def uninstall(self) -> None:
        """Remove the table: every event is forwarded again, as stock Xen does.

        Raises:
            NotInstalledError: already uninstalled (or replaced by another install).

        """
        dom = self._active_domain()
        dom._ctl.table_replace(dom.domid, RawTable())
        self.active = False
        dom._installation = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.active and not self.domain.hypervisor.closed:
            self.uninstall()


class Subscription:
    """Forwarded events of some kinds, as an iterator or through callbacks.

    Created by :meth:`Domain.subscribe`.  Iterating pulls events from the
    domain's event source (on the simulator: replays the input played into
    the domain; iteration ends when it is used up).  With callbacks
    registered (:meth:`on`), events go to the callbacks during
    :meth:`Domain.listen` / :meth:`Domain.run`; an exception a callback raises
    stops the delivery and propagates to the caller unchanged.

    Example:
        >>> sub = dom.subscribe(Cr3Switch, Breakpoint, process="target")
        >>> for ev in sub:                      # iterator
        ...     print(ev)
        >>> sub.on(lambda ev: print(ev))        # or callbacks, served by dom.run()

    """

    def __init__(self, domain: Domain, kinds: frozenset[Kind],
                 process: str | ValueSet | Container[int] | None) -> None:
        self.domain = domain
        self.kinds = kinds
        self.process = process
        self._queue: deque[Event] = deque()
        self._callbacks: list[Callable[[Event], None]] = []
        self.closed = False

    def on(self, callback: Callable[[Event], None]) -> Callable[[Event], None]:
        """Register a callback (usable as a decorator); returns it.

        Args:
            callback: called with each event, during :meth:`Domain.listen`.

        Returns:
            ``callback`` itself.

        Example:
            >>> @sub.on
            ... def hit(ev: Event) -> None:
            ...     print(ev)

        """
        self._callbacks.append(callback)
        return callback

    def _member(self) -> Callable[[int], bool] | None:
        p = self.process
        if p is None:
            return None
        if isinstance(p, str | ValueSet):
            name = p if isinstance(p, str) else p.name
            inst = self.domain._installation
            if inst is not None and name in inst._sets:
                return inst._sets[name].__contains__
        if isinstance(p, str):
            return None
        if isinstance(p, ValueSet):
            keys = {v & p.mask for v in p.values}
            mask = p.mask
            return lambda v: (v & mask) in keys
        return p.__contains__       # e.g. a ProcessScope, which follows its process

    def _deliver(self, raw: RawEvent) -> object:
        """Deliver one event; return the first non-None callback result (a response)."""
        ev = from_raw(raw, self._member())
        reply: object = None
        if self._callbacks:
            for cb in self._callbacks:
                r: object = cb(ev)
                if reply is None:
                    reply = r
        else:
            self._queue.append(ev)
        return reply

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while not self._queue:
            if self.closed or self.domain.source.exhausted:
                raise StopIteration
            self.domain.listen()
        return self._queue.popleft()

    def close(self) -> None:
        """Stop receiving events."""
        self.closed = True
        if self in self.domain._subs:
            self.domain._subs.remove(self)


class Domain:
    r"""One guest domain: install rules, register breakpoints, read statistics.

    Get it from :meth:`Hypervisor.domain` (existing domain) or, on the
    simulator, :meth:`Hypervisor.create_domain`.

    Example:
        >>> dom = hyp.domain(5)
        >>> dom.info().kinds                      # what this CPU can filter
        >>> dom.add_breakpoint(0x12344B0, b"\x55")
        >>> with dom.install(prog):
        ...     print(dom.stats().table())

    """

    def __init__(self, hyp: Hypervisor, domid: int, source: EventSource | None) -> None:
        self.hypervisor = hyp
        self.domid = domid
        self._source = source
        self._installation: Installation | None = None
        self._subs: list[Subscription] = []
        #: The first callback result of the event being dispatched (the LibVMI
        #: adapter answers the event with it).
        self._reply: object = None

    @property
    def _ctl(self) -> ShimControl:
        return self.hypervisor._control()

    @property
    def source(self) -> EventSource:
        """The source of forwarded events.

        Raises:
            UnsupportedError: on Xen before an adapter was attached.

        """
        if self._source is None and self.hypervisor.backend == "xen":
            from hvfilter.libvmi_adapter import LibvmiSource
            self._source = LibvmiSource.open(self)
        if self._source is None:
            raise UnsupportedError(
                f"domain {self.domid}: no event source: on Xen, events are consumed through "
                "LibVMI; attach its adapter with Domain.attach_source()", op="subscribe",
                domain=self.domid)
        return self._source

    def attach_source(self, source: EventSource) -> None:
        """Use ``source`` (e.g. the LibVMI adapter) for this domain's events."""
        self._source = source

    def info(self) -> Info:
        """Version, limits, capabilities and state of hvfilter for this domain.

        Returns:
            An :class:`~hvfilter.stats.Info`.

        Raises:
            NoSuchDomainError, PermissionDeniedError, NotPatchedError,
            VersionMismatchError: see :mod:`hvfilter.errors`.

        Example:
            >>> prog = compile(rules, supported_kinds=dom.info().kinds)

        """
        return Info.from_raw(self._ctl.get_info(self.domid))

    def install(self, program: Program) -> Installation:
        """Atomically replace the domain's rule table with ``program``.

        Use the result as a context manager to remove the table on exit.

        Raises:
            UnsupportedError: a rule names an event kind this CPU cannot raise.
            InvalidRuleError, LimitExceededError: the hypervisor rejected it.
            NoSuchDomainError, PermissionDeniedError, NotPatchedError,
            VersionMismatchError: see :mod:`hvfilter.errors`.

        Example:
            >>> with dom.install(compile(rules)) as inst:
            ...     dom.run()

        """
        self._ctl.table_replace(self.domid, program.table)
        if self._installation is not None:
            self._installation.active = False
        self._installation = Installation(self, program)
        return self._installation

    @property
    def installation(self) -> Installation | None:
        """The current installation made through this handle, if any."""
        return self._installation

    def stats(self) -> Stats:
        """The statistics, per event kind and per rule of the installed table.

        Returns:
            A :class:`~hvfilter.stats.Stats`.

        Example:
            >>> st = dom.stats()
            >>> st.kinds[Kind.CR3_WRITE].round_trips_avoided

        """
        return Stats.from_raw(self._ctl.stats_get(self.domid))

    def reset_stats(self) -> None:
        """Zero all counters (per kind and per rule, on every vCPU).

        Example:
            >>> dom.reset_stats(); assert dom.stats().total.seen == 0

        """
        self._ctl.stats_reset(self.domid)

    def add_breakpoint(self, gpa: int, insn: bytes) -> None:
        r"""Register a breakpoint you planted, with the bytes the int3 replaced.

        Rules with ``emulate`` then execute ``insn`` inside Xen.

        Args:
            gpa: guest-physical address of the int3.
            insn: the original instruction bytes (one whole instruction).

        Raises:
            InvalidArgumentError: ``insn`` empty, longer than 15 bytes, or 0xcc first.
            AlreadyExistsError: a breakpoint is registered at ``gpa``.
            LimitExceededError: MAX_BREAKPOINTS registered.

        Example:
            >>> dom.add_breakpoint(0x12344B0, b"\x55")      # push rbp

        """
        if not 1 <= len(insn) <= LIMITS.max_insn_len:
            raise InvalidArgumentError(
                f"bp_add on domain {self.domid}: instruction of {len(insn)} bytes "
                f"(1..{LIMITS.max_insn_len})", errno=errno.EINVAL, op="bp_add", domain=self.domid)
        self._ctl.bp_add(self.domid, gpa, insn)

    def remove_breakpoint(self, gpa: int) -> None:
        """Unregister the breakpoint at ``gpa``.

        Raises:
            NotFoundError: none is registered there.

        Example:
            >>> dom.remove_breakpoint(0x12344B0)

        """
        self._ctl.bp_remove(self.domid, gpa)

    # -- events ---------------------------------------------------------

    def subscribe(self, *types: type,
                  process: str | ValueSet | Container[int] | None = None) -> Subscription:
        """Subscribe to forwarded events of the given classes.

        Args:
            *types: event classes (:class:`Cr3Switch`, :class:`Breakpoint`...);
                none means all.
            process: the watched process (set name, :class:`ValueSet` or a
                :class:`~hvfilter.libvmi_adapter.ProcessScope`), which fills
                :attr:`Cr3Switch.entered`.

        Returns:
            A :class:`Subscription` (an iterator; or add callbacks with ``on``).

        Raises:
            UnsupportedError: no event source (on Xen: LibVMI's bindings are
                missing; ``pip install hvfilter[xen]``).

        Example:
            >>> for ev in dom.subscribe(Cr3Switch, process="target"):
            ...     print("in" if ev.entered else "out")

        """
        kinds: set[Kind] = set()
        for t in types or tuple(EVENT_KINDS):
            if t not in EVENT_KINDS:
                raise TypeError(f"not an event class: {t!r}")
            kinds |= EVENT_KINDS[t]
        sub = Subscription(self, frozenset(kinds), process)
        self.source.subscribe(sub.kinds)
        self._subs.append(sub)
        return sub

    def _dispatch(self, raw: RawEvent) -> bool:
        self._reply = None
        for sub in list(self._subs):
            if raw.kind in sub.kinds:
                r = sub._deliver(raw)
                if self._reply is None:
                    self._reply = r
        return False

    def listen(self, timeout: float | None = None) -> int:
        """Deliver the next forwarded events to the subscriptions.

        Args:
            timeout: seconds to wait for events (the simulator never waits).

        Returns:
            The number of events delivered (0 when nothing came).

        Raises:
            Exception: whatever a callback raised, unchanged.

        Example:
            >>> while not stop:
            ...     dom.listen(0.5)

        """
        return self.source.listen(timeout, self._dispatch if self._subs else None)

    def run(self, max_chunks: int | None = None) -> int:
        """Listen until the source is exhausted (simulator) or ``max_chunks`` rounds.

        Args:
            max_chunks: stop after this many :meth:`listen` calls.

        Returns:
            The number of events delivered.

        Example:
            >>> dom.play(GuestWorkload(rounds=100)); dom.run()

        """
        n = 0
        rounds = 0
        while not self.source.exhausted and (max_chunks is None or rounds < max_chunks):
            n += self.listen()
            rounds += 1
        return n

    # -- simulator only --------------------------------------------------

    def _sim(self) -> _SimSource:
        if not isinstance(self._source, _SimSource):
            raise UnsupportedError(f"domain {self.domid}: only simulated domains replay events",
                                   op="play", domain=self.domid)
        return self._source

    def play(self, source: GuestWorkload | Iterable[Event | RawEvent]) -> None:
        """Simulator: queue events (or a generated workload) as the guest's activity.

        They are evaluated as subscriptions pull them (:meth:`listen`,
        :meth:`run`, iterating a subscription).

        Args:
            source: a :class:`~hvfilter.workload.GuestWorkload` or events.

        Raises:
            UnsupportedError: not a simulated domain.

        Example:
            >>> dom.play([Cr3Switch(vcpu=0, old=a, new=b), Cpuid(vcpu=1, leaf=0)])

        """
        self._sim().play(source)

    def feed(self, events: Iterable[Event | RawEvent]) -> list[Verdict]:
        """Simulator: decide ``events`` now and return one verdict per event.

        Like ``BPF_PROG_TEST_RUN``: try a rule set on recorded or synthetic
        events.  Statistics are updated; subscriptions are not served.

        Example:
            >>> dom.feed([Cr3Switch(vcpu=0, old=a, new=b)])[0].action
            <ActionCode.FORWARD: 0>

        """
        return [Verdict.from_raw(v) for v in self._sim().feed([to_raw(e) for e in events])]


class Hypervisor:
    """A connection to Xen (``backend == "xen"``) or to the simulator (``"sim"``).

    Use :func:`open` to get one; close it (or use ``with``) when done.
    Leaving the ``with`` block also uninstalls what its domains installed.

    Example:
        >>> with hvfilter.open() as hyp:
        ...     print(hyp.backend, hyp.fallback_reason)

    """

    def __init__(self, ctl: ShimControl, fallback_reason: str | None = None) -> None:
        self._ctl: ShimControl | None = ctl
        self.backend: str = ctl.name
        #: Why ``open("auto")`` fell back to the simulator, or None.
        self.fallback_reason = fallback_reason
        self._domains: dict[int, Domain] = {}

    def _control(self) -> ShimControl:
        if self._ctl is None:
            raise ClosedError(f"the {self.backend} hypervisor handle is closed; remedy: "
                              f"{ClosedError.remedy}", errno=errno.EBADF, op="use")
        return self._ctl

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._ctl is None

    def domain(self, domid: int) -> Domain:
        """The handle of an existing domain (nothing is checked until used).

        Args:
            domid: the domain id, as ``xl list`` shows it.

        Raises:
            ClosedError: the hypervisor handle is closed.

        Example:
            >>> dom = hyp.domain(5)

        """
        self._control()
        if domid not in self._domains:
            self._domains[domid] = Domain(self, domid, None)
        return self._domains[domid]

    def create_domain(self, domid: int, vcpus: int = 1, hvm: bool = True) -> Domain:
        """Simulator: create a domain with ``vcpus`` vCPUs (``hvm=False``: a PV domain).

        Raises:
            UnsupportedError: on the xen backend.
            AlreadyExistsError: the domain exists.

        Example:
            >>> dom = hyp.create_domain(1, vcpus=4)

        """
        ctl = self._control()
        if self.backend != "sim":
            raise UnsupportedError("create_domain: only the simulator creates domains; "
                                   "use `xl create` on Xen", op="create_domain")
        ctl.sim_domain_create(domid, vcpus, hvm)
        dom = Domain(self, domid, _SimSource(ctl, domid))
        self._domains[domid] = dom
        return dom

    def destroy_domain(self, domid: int) -> None:
        """Simulator: destroy a domain; its table and breakpoints are freed."""
        self._control().sim_domain_destroy(domid)
        self._domains.pop(domid, None)

    def close(self) -> None:
        """Release the connection; further use raises :class:`ClosedError`.

        Event sources with a ``close`` method (the LibVMI adapter that
        :meth:`Domain.subscribe` opened on Xen) are closed too.
        """
        for dom in self._domains.values():
            closer = getattr(dom._source, "close", None)
            if closer is not None:
                dom._source = None
                closer()
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        for dom in self._domains.values():
            inst = dom._installation
            if inst is not None and inst.active and self._ctl is not None:
                try:
                    inst.uninstall()
                except HvfilterError:
                    if et is None:
                        raise
        self.close()


def open(backend: Literal["auto", "xen", "sim"] = "auto", *,
         sim: SimConfig | None = None) -> Hypervisor:
    """Connect to the hypervisor.

    Args:
        backend: ``"xen"`` (dom0 of a Xen host), ``"sim"`` (the in-process
            simulator) or ``"auto"``: Xen if this is dom0 on Xen, else the
            simulator (``Hypervisor.fallback_reason`` says why).
        sim: the simulator's personality.

    Returns:
        A :class:`Hypervisor`.

    Raises:
        NotOnXenError: ``backend="xen"`` where there is no Xen.
        PermissionDeniedError: privcmd may not be opened (not root).

    Example:
        >>> with hvfilter.open("sim") as hyp:
        ...     dom = hyp.create_domain(1, vcpus=2)

    """
    if backend in ("auto", "xen"):
        try:
            return Hypervisor(ShimControl.open_xen())
        except NotOnXenError as e:
            if backend == "xen":
                raise
            reason = str(e).split(";")[0]
    else:
        reason = None
    cfg = sim or SimConfig()
    kinds = 0 if cfg.kinds is None else kinds_bitmap(cfg.kinds)
    ctl = ShimControl.open_sim(cfg.domctl_version, cfg.abi_version, kinds, cfg.unpatched,
                               cfg.unprivileged, cfg.seed)
    return Hypervisor(ctl, reason)
