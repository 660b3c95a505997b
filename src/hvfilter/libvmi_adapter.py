"""Process-bound monitoring on Xen, with LibVMI as the monitor-ring consumer.

Xen allows one monitor per domain and VMI tools already use LibVMI, so on
Xen hvfilter does not read the ring itself: LibVMI's Python bindings
(``pip install hvfilter[xen]``) receive the events, this module turns them
into hvfilter's typed events and answers them.  A :class:`Monitor` ties the
pieces of process-bound monitoring together so that they are set up and torn
down as one:

* the hypervisor rules (CR3 writes entering or leaving the process are
  forwarded, other writes pass; breakpoint hits inside the process are
  forwarded, others are emulated in Xen);
* the LibVMI events that make Xen raise them (CR3 write, int3);
* the breakpoints planted with :meth:`Monitor.plant` (int3 written through
  LibVMI, original bytes registered with the hypervisor);
* the :class:`ProcessScope`, whose CR3 values the hypervisor set follows.

Example:
    >>> import hvfilter as hv
    >>> from hvfilter.libvmi_adapter import Monitor, ProcessScope, Response
    >>> with hv.open("xen") as hyp, Monitor(hyp.domain(5)) as mon:
    ...     target = ProcessScope.from_pid(mon.vmi, 1234)
    ...     bp = mon.plant(0x1234B0, length=1)           # GPA and instruction length
    ...     sub = mon.watch(target, hv.Cr3Switch, hv.Breakpoint)
    ...     @sub.on
    ...     def show(ev: hv.Event) -> None:
    ...         print(ev)                                  # only the target's events
    ...     mon.run(until=lambda: stop)

``filter_in="dom0"`` keeps the same tool and the same deliveries but installs
no rules: every event makes the round trip and is filtered in Python, as
VMI tools do without hvfilter (the comparison of ``make bench``).

Nothing here imports ``libvmi`` until a monitor is opened.

"""

from __future__ import annotations

import atexit
import enum
import errno
import importlib
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType
from typing import Any, Literal

from typing_extensions import Self

from hvfilter._raw import RawEvent
from hvfilter.abi import PAGE_SHIFT, Kind
from hvfilter.compiler import compile as compile_rules
from hvfilter.errors import (
    HvfilterError,
    InvalidArgumentError,
    StateError,
    UnsupportedError,
)
from hvfilter.events import Breakpoint, Cr3Switch, raw_event
from hvfilter.hypervisor import Domain, Hypervisor, Installation, InstalledSet, Subscription
from hvfilter.rules import (
    CR3,
    KPTI_BIT,
    NEW,
    OLD,
    PROCESS_MASK,
    Cond,
    Rule,
    ValueSet,
    emulate,
    forward,
    on,
    pass_,
)

#: What a LibVMI listen waits at most when no timeout is given (ms).
POLL_MS = 100
INT3 = 0xCC


class Response(enum.Enum):
    """How a forwarded event is answered (return it from a callback).

    ``CONTINUE``: let the vCPU go on (a CR3 write commits).
    ``EMULATE``: for a breakpoint planted with :meth:`Monitor.plant`, Xen
    executes the original instruction from the bytes registered with
    hvfilter (no single-step).  ``REINJECT``: deliver the int3 to the guest
    (a breakpoint the guest owns).  ``None`` from a callback means the
    default: EMULATE for planted breakpoints, REINJECT for other int3s,
    CONTINUE for everything else.

    Example:
        >>> @sub.on
        ... def hit(ev):
        ...     return Response.EMULATE

    """

    CONTINUE = "continue"
    EMULATE = "emulate"
    REINJECT = "reinject"


def _libvmi() -> Any:  # noqa: ANN401 (an untyped package)
    try:
        libvmi = importlib.import_module("libvmi")
        importlib.import_module("libvmi.event")
    except ImportError as e:
        raise UnsupportedError(
            "LibVMI's Python bindings are not installed; remedy: pip install 'hvfilter[xen]' "
            "(the libvmi package; LibVMI consumes the monitor ring on Xen)",
            op="subscribe") from e
    return libvmi


class ProcessScope:
    """The CR3 values (page-table roots) of the monitored process(es).

    A process is not one CR3 value (PCIDs, KPTI user roots, the no-flush
    bit), so membership uses :data:`~hvfilter.PROCESS_MASK`.  The scope is a
    rule condition like any set (:attr:`running`, :attr:`switch`,
    :attr:`set`); once a monitor watches it, :meth:`add`, :meth:`remove` and
    :meth:`refresh` update the hypervisor's set at once.

    Args:
        name: the set's name in the rules (1..15 characters).
        roots: initial CR3 values.
        resolver: optional callable returning the current roots;
            :meth:`refresh` applies the difference.
        capacity: the most keys the installed set can hold.

    Example:
        >>> target = ProcessScope("target", 0x1f4d3000)
        >>> rules = [on(Kind.CPUID).when(target.running).then(forward)]

    """

    def __init__(self, name: str, *roots: int, resolver: Callable[[], Iterable[int]] | None = None,
                 capacity: int = 64) -> None:
        self.name = name
        self.mask = PROCESS_MASK
        self.capacity = capacity
        self.resolver = resolver
        self._keys: dict[int, int] = {}          # masked key -> a raw root that gave it
        self._installed: InstalledSet | None = None
        for r in roots:
            self._keys.setdefault(r & self.mask, r)

    # -- named constructors ------------------------------------------------

    @classmethod
    def from_roots(cls, name: str, roots: Iterable[int], capacity: int = 64) -> ProcessScope:
        """A scope from raw page-table roots (kernel and/or user roots)."""
        return cls(name, *roots, capacity=capacity)

    @classmethod
    def following(cls, name: str, resolver: Callable[[], Iterable[int]],
                  capacity: int = 64) -> ProcessScope:
        """A scope whose roots come from ``resolver`` (called now and on :meth:`refresh`).

        Example:
            >>> scope = ProcessScope.following("target", lambda: roots_from_info_page())

        """
        return cls(name, *resolver(), resolver=resolver, capacity=capacity)

    @classmethod
    def from_pid(cls, vmi: Any, *pids: int,  # noqa: ANN401
                 name: str = "target", kpti: bool = True, capacity: int = 64) -> ProcessScope:
        """The processes with these pids, resolved through LibVMI's ``pid_to_dtb``.

        With ``kpti`` the KPTI user root (``dtb | 1 << 12``) is included too
        (the mask makes it the same key; it is listed for :attr:`roots`).
        The pids are resolved again on every :meth:`refresh`, so a process that
        exits leaves the set and one whose pid is reused joins it.
        Needs a LibVMI instance initialised with an OS profile.

        Example:
            >>> target = ProcessScope.from_pid(vmi, 1234)

        """
        def resolve() -> list[int]:
            out: list[int] = []
            for pid in pids:
                try:
                    dtb = int(vmi.pid_to_dtb(pid))
                except Exception:           # the process is gone (LibvmiError)
                    continue
                out.append(dtb)
                if kpti:
                    out.append(dtb | KPTI_BIT)
            return out

        return cls.following(name, resolve, capacity)

    @classmethod
    def from_name(cls, vmi: Any, process_name: str, *,  # noqa: ANN401
                  processes: Callable[[], Iterable[tuple[int, str]]], name: str = "target",
                  kpti: bool = True, capacity: int = 64) -> ProcessScope:
        """Every process called ``process_name``; ``processes`` lists (pid, name) pairs.

        LibVMI has no name lookup of its own: pass the listing your tool
        already has (e.g. a walk of the task list with your OS profile).
        Each :meth:`refresh` lists again and resolves pids with ``pid_to_dtb``.
        """
        def resolve() -> list[int]:
            out: list[int] = []
            for pid, pname in processes():
                if pname != process_name:
                    continue
                try:
                    dtb = int(vmi.pid_to_dtb(pid))
                except Exception:
                    continue
                out += [dtb, dtb | KPTI_BIT] if kpti else [dtb]
            return out

        return cls.following(name, resolve, capacity)

    # -- as a rule condition ---------------------------------------------

    @property
    def set(self) -> ValueSet:
        """The scope as a :class:`~hvfilter.ValueSet` (its current roots)."""
        return ValueSet(self.name, self.mask, tuple(sorted(self._keys)), self.capacity)

    @property
    def running(self) -> Cond:
        """Condition: the event happened while the process was running (CR3 in the scope)."""
        return CR3.in_(self.set)

    @property
    def switch(self) -> Cond:
        """Condition: a CR3 write enters or leaves the scope (exactly one side in it)."""
        s = self.set
        return NEW.in_(s) ^ OLD.in_(s)

    # -- membership and updates ---------------------------------------

    def __contains__(self, cr3: object) -> bool:
        return isinstance(cr3, int) and (cr3 & self.mask) in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> frozenset[int]:
        """The masked keys (one per process)."""
        return frozenset(self._keys)

    @property
    def roots(self) -> tuple[int, ...]:
        """One raw root per key."""
        return tuple(self._keys.values())

    def add(self, *roots: int) -> None:
        """Add roots; the hypervisor's set changes at once when installed."""
        new = {r & self.mask: r for r in roots if (r & self.mask) not in self._keys}
        if not new:
            return
        if self._installed is not None:
            self._installed.add(*new)
        self._keys.update(new)

    def remove(self, *roots: int) -> None:
        """Remove roots (a process exited); the hypervisor's set follows."""
        gone = {r & self.mask for r in roots} & self._keys.keys()
        if not gone:
            return
        if self._installed is not None:
            self._installed.remove(*gone)
        for k in gone:
            del self._keys[k]

    def refresh(self) -> tuple[frozenset[int], frozenset[int]]:
        """Ask the resolver again; apply and return (added, removed) keys.

        Raises:
            StateError: the scope has no resolver.

        """
        if self.resolver is None:
            raise StateError(f"scope {self.name}: no resolver to refresh from", op="refresh")
        now = {r & self.mask: r for r in self.resolver()}
        added = frozenset(now.keys() - self._keys.keys())
        removed = frozenset(self._keys.keys() - now.keys())
        if removed:
            self.remove(*removed)
        if added:
            self.add(*(now[k] for k in added))
        return added, removed

    def _bind(self, inst: InstalledSet | None) -> None:
        self._installed = inst

    def __repr__(self) -> str:
        return f"ProcessScope({self.name!r}, {', '.join(hex(k) for k in sorted(self._keys))})"


class Planted:
    """A breakpoint planted by :meth:`Monitor.plant`; :meth:`remove` restores the bytes."""

    def __init__(self, monitor: Monitor, gpa: int, insn: bytes) -> None:
        self.monitor = monitor
        self.gpa = gpa
        self.insn = insn
        self.active = True

    def remove(self) -> None:
        """Restore the original byte and unregister it from the hypervisor."""
        self.monitor._unplant(self)

    def __repr__(self) -> str:
        return f"Planted(gpa={self.gpa:#x}, insn={self.insn.hex()}, active={self.active})"


class LibvmiSource:
    """The :class:`~hvfilter.EventSource` of a Xen domain: LibVMI's callbacks.

    Registers ``RegEvent(CR3, W)`` for :class:`~hvfilter.Cr3Switch` and
    ``IntEvent(INT3)`` for :class:`~hvfilter.Breakpoint`, converts each
    event, and answers it with the response the subscriptions' callbacks
    returned (or the default).  An exception raised by a callback is
    stored while LibVMI's C code runs (the event gets its default answer so
    the guest goes on), later events of that ``listen`` are answered by
    default without delivery, and the exception is raised from
    :meth:`listen` once LibVMI returned.

    Args:
        domain: the hvfilter domain handle.
        vmi: an open ``libvmi.Libvmi`` with ``INIT_EVENTS``.
        owns_vmi: destroy ``vmi`` on :meth:`close`.

    Example:
        >>> dom.attach_source(LibvmiSource(dom, vmi))
        >>> for ev in dom.subscribe(Cr3Switch): ...

    """

    def __init__(self, domain: Domain, vmi: Any, owns_vmi: bool = False) -> None:  # noqa: ANN401
        self.domain = domain
        self.vmi = vmi
        self.owns_vmi = owns_vmi
        self._lv = _libvmi()
        self._events: dict[Kind, Any] = {}
        self._deliver: Callable[[RawEvent], bool] | None = None
        self._error: BaseException | None = None
        self._count = 0
        #: Optional dom0-side filter (``Monitor(filter_in="dom0")``): events it
        #: rejects are answered by default and never delivered.
        self.prefilter: Callable[[RawEvent], bool] | None = None
        #: GPAs of breakpoints planted through this source (answered EMULATE).
        self.planted: set[int] = set()
        #: Busy-wait on the ring instead of sleeping in LibVMI's poll()
        #: (``Monitor(poll="spin")``): no wake-up of an idle dom0 vCPU per event.
        self.spin = False
        #: Events that reached dom0 (every LibVMI callback) and were delivered.
        self.received = 0
        self.delivered = 0
        self.closed = False

    @classmethod
    def open(cls, domain: Domain, name: str | None = None) -> LibvmiSource:
        """Open LibVMI on ``domain`` (by name, else by id) in partial Xen mode with events."""
        lv = _libvmi()
        # By name: the Python bindings pass INIT_DOMAINID's id as a string,
        # which LibVMI would read as a number's bytes.
        name = name or _domain_name(domain.domid)
        try:
            vmi = lv.Libvmi(name, lv.INIT_DOMAINNAME | lv.INIT_EVENTS, mode=lv.VMIMode.XEN,
                            partial=True)
        except lv.LibvmiError as e:
            raise HvfilterError(f"LibVMI could not open domain {name or domain.domid} with "
                                f"events: {e}; remedy: run as root in dom0, and only one "
                                "monitor per domain", op="libvmi_init", domain=domain.domid) from e
        return cls(domain, vmi, owns_vmi=True)

    # -- EventSource -----------------------------------------------------

    def subscribe(self, kinds: frozenset[Kind]) -> None:
        """Register the LibVMI events behind ``kinds`` (CR3 writes, int3)."""
        if self.closed:
            raise StateError(f"domain {self.domain.domid}: the LibVMI source is closed",
                             op="subscribe", domain=self.domain.domid)
        for k in kinds:
            if k in self._events:
                continue
            if k == Kind.CR3_WRITE:
                lve = self._lv.event
                ev = lve.RegEvent(self._lv.X86Reg.CR3, lve.RegAccess.W, self._on_cr3)
            elif k == Kind.BREAKPOINT:
                ev = self._lv.event.IntEvent(self._on_int3)
            else:
                continue   # kinds LibVMI's bindings cannot subscribe: never raised here
            self.vmi.register_event(ev)
            self._events[k] = ev

    @property
    def kinds(self) -> frozenset[Kind]:
        """The kinds whose LibVMI events are registered."""
        return frozenset(self._events)

    @property
    def exhausted(self) -> bool:
        """A live domain never runs out of events (True only once closed)."""
        return self.closed

    def listen(self, timeout: float | None,
               deliver: Callable[[RawEvent], bool] | None) -> int:
        """Run LibVMI's event loop for up to ``timeout`` seconds; see the class."""
        ms = POLL_MS if timeout is None else max(1, int(timeout * 1000))
        self._deliver = deliver
        self._count = 0
        self._error = None
        try:
            if self.spin:
                self._spin_listen(ms)
            else:
                self.vmi.listen(ms)
        finally:
            self._deliver = None
        err, self._error = self._error, None
        if err is not None:
            raise err
        return self._count

    def _spin_listen(self, ms: int) -> None:
        # Checking the ring is a memory read; LibVMI's listen then handles
        # the requests (its poll() returns at once: the port is pending).
        end = time.monotonic() + ms / 1000
        while self.vmi.are_events_pending() <= 0:
            if time.monotonic() >= end:
                return
        self.vmi.listen(1)

    # -- LibVMI callbacks --------------------------------------------------

    def _dispatch(self, raw: RawEvent) -> Response | None:
        self.received += 1
        if self._error is not None or self._deliver is None:
            return None
        if self.prefilter is not None and not self.prefilter(raw):
            return None
        try:
            self.domain._reply = None
            self._deliver(raw)      # Domain._dispatch: sets domain._reply
            self._count += 1
            self.delivered += 1
            reply = self.domain._reply
        except BaseException as e:  # re-raised by listen() after LibVMI returns
            self._error = e
            return None
        return reply if isinstance(reply, Response) else None

    def _on_cr3(self, _vmi: Any, e: Any) -> Any:  # noqa: ANN401
        regs = e.x86_regs
        raw = raw_event(Kind.CR3_WRITE, vcpu=e.vcpu_id, cr3=e.previous, rip=regs.rip,
                        cpl=(regs.cs_arbytes >> 5) & 3, new=e.value, old=e.previous)
        self._dispatch(raw)
        return None      # CONTINUE: the write commits

    def _on_int3(self, _vmi: Any, e: Any) -> Any:  # noqa: ANN401
        regs = e.x86_regs
        gpa = (e.gfn << PAGE_SHIFT) | (e.offset & ((1 << PAGE_SHIFT) - 1))
        raw = raw_event(Kind.BREAKPOINT, vcpu=e.vcpu_id, cr3=regs.cr3, rip=regs.rip,
                        cpl=(regs.cs_arbytes >> 5) & 3, index=1, gfn=e.gfn, gla=e.gla)
        reply = self._dispatch(raw)
        if reply is None:
            reply = Response.EMULATE if gpa in self.planted else Response.REINJECT
        if reply is Response.EMULATE:
            # Xen executes the instruction registered with hvfilter at this address.
            e.reinject = 0
            return self._lv.event.EventResponse.EMULATE
        e.reinject = 1
        return None

    # -- teardown ----------------------------------------------------------

    def drain(self) -> None:
        """Answer every request still in the ring (the guest must be paused)."""
        deliver, self._deliver = self._deliver, None
        try:
            while self.vmi.are_events_pending() > 0:
                self.vmi.listen(10)
        finally:
            self._deliver = deliver

    def clear(self) -> None:
        """Unregister every LibVMI event: pause, answer what is pending, clear, resume."""
        if not self._events:
            return
        self.vmi.pause_vm()
        try:
            self.drain()
            for ev in self._events.values():
                self.vmi.clear_event(ev)
            self._events.clear()
        finally:
            self.vmi.resume_vm()

    def close(self) -> None:
        """Clear the events and, if owned, destroy the LibVMI instance."""
        if self.closed:
            return
        try:
            self.clear()
        finally:
            self.closed = True
            if self.owns_vmi:
                self.vmi.destroy()


def _domain_name(domid: int) -> str:
    """The name of domain ``domid`` (xenstore, else ``xl domname``)."""
    import subprocess

    for argv in (["xenstore-read", f"/local/domain/{domid}/name"], ["xl", "domname", str(domid)]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    raise HvfilterError(f"domain {domid}: no name found (xenstore-read, xl domname); remedy: "
                        "check the domain id with `xl list`", op="libvmi_init", domain=domid)


def process_bound_rules(scope: ProcessScope, kinds: frozenset[Kind]) -> list[Rule]:
    """The process-bound rule set for ``scope`` and these kinds.

    CR3 writes entering or leaving the scope are forwarded, the others pass
    in Xen; breakpoint hits inside the scope are forwarded, the others are
    emulated in Xen (a hit on an int3 nobody registered is forwarded, so the
    tool can reinject it).

    Example:
        >>> print(compile(process_bound_rules(scope, frozenset({Kind.CR3_WRITE}))).dump())

    """
    rules: list[Rule] = []
    if Kind.CR3_WRITE in kinds:
        rules += [on(Kind.CR3_WRITE).when(scope.switch).named("scope in/out").then(forward),
                  on(Kind.CR3_WRITE).named("other CR3 writes").then(pass_)]
    if Kind.BREAKPOINT in kinds:
        rules += [on(Kind.BREAKPOINT).when(scope.running).named("hits in scope").then(forward),
                  on(Kind.BREAKPOINT).named("other hits").then(emulate)]
    return rules


def _in_scope(scope: ProcessScope) -> Callable[[RawEvent], bool]:
    """The same decision as :func:`process_bound_rules`, made in Python (dom0)."""
    from hvfilter.abi import Field

    def keep(raw: RawEvent) -> bool:
        f = raw.fields
        if raw.kind == Kind.CR3_WRITE:
            return (f[Field.NEW_VALUE] in scope) != (f[Field.OLD_VALUE] in scope)
        if raw.kind == Kind.BREAKPOINT:
            return f[Field.CR3] in scope
        return True

    return keep


class Monitor:
    """Process-bound monitoring of one Xen domain, set up and torn down as one.

    Opens (or uses) LibVMI on the domain and attaches it as the domain's
    event source.  :meth:`watch` installs the hypervisor rules for a scope
    and registers the LibVMI events together; :meth:`plant` writes int3s.
    Closing (the end of the ``with`` block, also on an exception, SIGTERM or
    interpreter exit) pauses the guest, restores every planted byte,
    answers what is pending, clears the LibVMI events, unregisters the
    breakpoints, uninstalls the rules and resumes the guest.

    Args:
        domain: a domain of a ``hvfilter.open("xen")`` hypervisor.
        vmi: an open ``libvmi.Libvmi`` (with ``INIT_EVENTS``), a domain name,
            or None to open the domain by id.
        filter_in: ``"xen"`` (hvfilter: rules in the hypervisor) or
            ``"dom0"`` (stock VMI: no rules, every event comes to dom0 and is
            filtered here in Python; planted breakpoints are still
            registered so that EMULATE answers work).
        poll: ``"block"`` (sleep in LibVMI's poll() until the ring's event
            channel fires) or ``"spin"`` (keep a dom0 CPU busy checking the
            ring: lower latency per event, one CPU spent).

    Example:
        >>> with Monitor(dom) as mon:
        ...     sub = mon.watch(ProcessScope("target", dtb), Cr3Switch)
        ...     for ev in sub:
        ...         print(ev)

    """

    def __init__(self, domain: Domain, vmi: Any = None,  # noqa: ANN401
                 filter_in: Literal["xen", "dom0"] = "xen",
                 poll: Literal["block", "spin"] = "block") -> None:
        if filter_in not in ("xen", "dom0"):
            raise InvalidArgumentError(f"filter_in must be 'xen' or 'dom0', not {filter_in!r}",
                                       errno=errno.EINVAL, op="monitor", domain=domain.domid)
        self.domain = domain
        self.filter_in = filter_in
        if vmi is None or isinstance(vmi, str):
            self.source = LibvmiSource.open(domain, vmi)
        else:
            self.source = LibvmiSource(domain, vmi)
        self.vmi = self.source.vmi
        self.source.spin = poll == "spin"
        self._planted: dict[int, Planted] = {}
        self._scopes: list[ProcessScope] = []
        self._installation: Installation | None = None
        self._subs: list[Subscription] = []
        self._old_term: Any = None
        self.closed = False
        domain.attach_source(self.source)
        atexit.register(self.close)
        if threading.current_thread() is threading.main_thread():
            old = signal.getsignal(signal.SIGTERM)
            if old in (signal.SIG_DFL, None):
                self._old_term = old
                signal.signal(signal.SIGTERM, _term_to_exit)

    @classmethod
    def open(cls, hyp: Hypervisor, name: str,
             filter_in: Literal["xen", "dom0"] = "xen") -> Monitor:
        """Open LibVMI on the domain called ``name`` and monitor it.

        Example:
            >>> with hvfilter.open("xen") as hyp, Monitor.open(hyp, "web01") as mon:
            ...     ...

        """
        lv = _libvmi()
        try:
            vmi = lv.Libvmi(name, lv.INIT_DOMAINNAME | lv.INIT_EVENTS, mode=lv.VMIMode.XEN,
                            partial=True)
        except lv.LibvmiError as e:
            raise HvfilterError(f"LibVMI could not open domain {name} with events: {e}; "
                                "remedy: run as root in dom0, and only one monitor per domain",
                                op="libvmi_init") from e
        try:
            mon = cls(hyp.domain(int(vmi.get_vmid())), vmi, filter_in)
        except BaseException:
            vmi.destroy()
            raise
        mon.source.owns_vmi = True
        return mon

    # -- breakpoints -------------------------------------------------------

    def plant(self, gpa: int, length: int | None = None, *, insn: bytes | None = None) -> Planted:
        """Write an int3 at guest-physical ``gpa``; register the bytes it replaces.

        The int3 event is subscribed first, then the original instruction
        (``length`` bytes read from the guest, or ``insn``, checked against
        memory) is registered with the hypervisor, then 0xCC is written.

        Args:
            gpa: guest-physical address of the instruction's first byte.
            length: the instruction's length (from your disassembler).
            insn: the instruction bytes, instead of ``length``.

        Returns:
            A :class:`Planted`; :meth:`Planted.remove` undoes it (closing the
            monitor does too).

        Raises:
            InvalidArgumentError: no length, a mismatch with memory, or an
                int3 already there.
            AlreadyExistsError: a breakpoint is registered at ``gpa``.

        Example:
            >>> bp = mon.plant(0x101000, length=8)

        """
        self._check_open()
        n = len(insn) if insn is not None else length
        if not n or not 1 <= n <= 15:
            raise InvalidArgumentError(f"plant at {gpa:#x}: give the instruction length (1..15) "
                                       "or its bytes", errno=errno.EINVAL, op="plant",
                                       domain=self.domain.domid)
        mem, got = self.vmi.read_pa(gpa, n)
        mem = bytes(mem[:got])
        if insn is not None and mem != insn:
            raise InvalidArgumentError(f"plant at {gpa:#x}: memory holds {mem.hex()}, not "
                                       f"{insn.hex()}", errno=errno.EINVAL, op="plant",
                                       domain=self.domain.domid)
        if len(mem) != n or mem[0] == INT3:
            raise InvalidArgumentError(f"plant at {gpa:#x}: cannot read {n} bytes there, or an "
                                       "int3 is already there", errno=errno.EINVAL, op="plant",
                                       domain=self.domain.domid)
        self.source.subscribe(frozenset({Kind.BREAKPOINT}))
        self.domain.add_breakpoint(gpa, mem)
        p = Planted(self, gpa, mem)
        self._planted[gpa] = p
        self.source.planted.add(gpa)
        try:
            self.vmi.write_8_pa(gpa, INT3)
        except BaseException:
            self._unplant(p)
            raise
        return p

    def _unplant(self, p: Planted) -> None:
        if not p.active:
            return
        self.vmi.pause_vm()
        try:
            self.vmi.write_pa(p.gpa, p.insn[:1])
            # A hit already in the ring is answered while the bytes are still
            # registered, so Xen can emulate it.
            self.source.drain()
        finally:
            p.active = False
            self._planted.pop(p.gpa, None)
            self.source.planted.discard(p.gpa)
            try:
                self.domain.remove_breakpoint(p.gpa)
            finally:
                self.vmi.resume_vm()

    @property
    def planted(self) -> tuple[Planted, ...]:
        """The breakpoints currently planted."""
        return tuple(self._planted.values())

    # -- subscriptions -----------------------------------------------------

    def watch(self, scope: ProcessScope, *types: type,
              rules: Iterable[Rule] | None = None) -> Subscription:
        """Monitor ``scope``: install the rules, register LibVMI's events, subscribe.

        Args:
            scope: the process(es).
            *types: event classes (:class:`~hvfilter.Cr3Switch`,
                :class:`~hvfilter.Breakpoint`); none means both.
            rules: your own rules instead of :func:`process_bound_rules`
                (e.g. using ``scope.running`` in conditions); ignored with
                ``filter_in="dom0"``.

        Returns:
            A :class:`~hvfilter.Subscription` (iterate it or add callbacks
            with ``on``; callbacks may return a :class:`Response`).

        Raises:
            StateError: a scope is watched already (one rule table per domain).

        Example:
            >>> sub = mon.watch(target, Cr3Switch, Breakpoint)

        """
        self._check_open()
        if self._scopes:
            raise StateError(f"domain {self.domain.domid}: already watching scope "
                             f"{self._scopes[0].name}", op="watch", domain=self.domain.domid)
        types = types or (Cr3Switch, Breakpoint)
        kinds: set[Kind] = set()
        for t in types:
            if t is Cr3Switch:
                kinds.add(Kind.CR3_WRITE)
            elif t is Breakpoint:
                kinds.add(Kind.BREAKPOINT)
            else:
                raise UnsupportedError(f"watch: LibVMI's Python bindings deliver Cr3Switch and "
                                       f"Breakpoint here, not {t.__name__}", op="watch",
                                       domain=self.domain.domid)
        fk = frozenset(kinds)
        if self.filter_in == "xen":
            chosen = list(rules) if rules is not None else process_bound_rules(scope, fk)
            prog = compile_rules(chosen)
            self._installation = self.domain.install(prog)
            try:
                scope._bind(self._installation.set(scope.name))
            except KeyError:
                scope._bind(None)
        else:
            self.source.prefilter = _in_scope(scope)
        self._scopes.append(scope)
        try:
            sub = self.domain.subscribe(*types, process=scope)
        except BaseException:
            self._unwatch()
            raise
        self._subs.append(sub)
        return sub

    def _unwatch(self) -> None:
        for s in self._scopes:
            s._bind(None)
        self._scopes.clear()
        self.source.prefilter = None
        inst, self._installation = self._installation, None
        if inst is not None and inst.active:
            inst.uninstall()

    # -- event loop --------------------------------------------------------

    def listen(self, timeout: float | None = None) -> int:
        """One round of LibVMI's event loop; callbacks run; their exceptions propagate.

        Returns:
            The number of events delivered to subscriptions.

        """
        self._check_open()
        return self.domain.listen(timeout)

    def run(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> int:
        """Listen until ``until()`` is true (checked between rounds) or ``timeout`` seconds.

        Returns:
            The number of events delivered.

        """
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        n = 0
        while not (until is not None and until()):
            if deadline is not None and time.monotonic() >= deadline:
                break
            n += self.listen(0.1)
        return n

    # -- teardown ------------------------------------------------------------

    def close(self) -> None:
        """Undo everything (see the class); safe to call twice.

        Every step is attempted even if an earlier one fails; the first
        failure is raised at the end.
        """
        if self.closed:
            return
        self.closed = True
        errors: list[BaseException] = []

        def attempt(fn: Callable[[], None]) -> None:
            try:
                fn()
            except BaseException as e:
                errors.append(e)

        for p in list(self._planted.values()):
            attempt(p.remove)
        for s in self._subs:
            attempt(s.close)
        attempt(self.source.clear)
        attempt(self._unwatch)
        if self.domain._source is self.source:
            self.domain._source = None
        attempt(self.source.close)
        atexit.unregister(self.close)
        if (signal.getsignal(signal.SIGTERM) is _term_to_exit
                and threading.current_thread() is threading.main_thread()):
            attempt(lambda: _restore_term(self._old_term))
        if errors:
            raise errors[0]

    def _check_open(self) -> None:
        if self.closed:
            raise StateError(f"domain {self.domain.domid}: the monitor is closed", op="monitor",
                             domain=self.domain.domid)

    @property
    def stats(self) -> dict[str, int]:
        """Events that reached dom0 (LibVMI callbacks) and were delivered to Python."""
        return {"received": self.source.received, "delivered": self.source.delivered}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.close()
        except BaseException:
            if et is None:
                raise


def _term_to_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _restore_term(old: Any) -> None:  # noqa: ANN401
    signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)
