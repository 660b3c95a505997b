"""Helpers for lab scenarios running in dom0 (in the QEMU lab or on a real Xen host).

A scenario is a module ``lab/scenarios/<name>.py`` with::

    TIMEOUT = 300            # seconds (optional, default DEFAULT_TIMEOUT)

    def run(ctx: Context) -> None:
        guest = ctx.create_guest("nproc=4 quiet=1")
        ...
        ctx.check("what is asserted", ok, seen=..., expected=...)
        ctx.data["anything"] = ...   # JSON-serialisable, goes back to the host

Every ``ctx.check`` is recorded (name, ok, details) and the scenario fails if
any check failed or it raised.  ``runner.py`` destroys the guests a scenario
created, whatever happened.  Nothing here sleeps for synchronisation: waiting
is polling a condition against a deadline (``wait_until``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import time
from typing import Any, Callable, Optional, TypeVar

DEFAULT_TIMEOUT = 300
T = TypeVar("T")


class LabError(Exception):
    """A lab step failed; the message names the step."""


def log(msg: str) -> None:
    print(f"[hvlab] {msg}", flush=True)


def stage(msg: str) -> None:
    """A progress marker the host (lab/run) picks up from the console."""
    print(f"@@HVLAB-STAGE {msg}@@", flush=True)


def run_cmd(argv: list[str], timeout: float = 60, check: bool = True) -> str:
    """Run a command, return its stdout; raise LabError naming it on failure."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"'{shlex.join(argv)}' did not finish within {timeout} s") from e
    except FileNotFoundError as e:
        raise LabError(f"'{argv[0]}' not found") from e
    if check and p.returncode != 0:
        raise LabError(f"'{shlex.join(argv)}' failed with exit code {p.returncode}: {p.stdout.strip()[-2000:]}")
    return p.stdout


def wait_until(pred: Callable[[], Optional[T]], timeout: float, what: str,
               interval: float = 0.05) -> T:
    """Poll ``pred`` until it returns something truthy; raise LabError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except LabError:
            raise
        except Exception as e:  # keep polling, but remember why it failed
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise LabError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(interval)  # poll interval, not synchronisation


def xl(*args: str, timeout: float = 60) -> str:
    return run_cmd(["xl", *args], timeout=timeout)


def xl_dmesg() -> str:
    return run_cmd(["xl", "dmesg"], timeout=30, check=False)


def domid_of(name: str) -> Optional[int]:
    out = run_cmd(["xl", "domid", name], timeout=30, check=False).strip()
    return int(out) if out.isdigit() else None


class Guest:
    """A test guest created with ``xl create`` (type pvh, no device model)."""

    def __init__(self, name: str, kernel: str, cmdline: str, memory: int = 32, vcpus: int = 1):
        self.name = name
        self.kernel = kernel
        self.cmdline = cmdline
        self.memory = memory
        self.vcpus = vcpus
        self.domid: Optional[int] = None
        self._dmesg_mark = ""

    def config_text(self) -> str:
        return (f'name = "{self.name}"\n'
                f'type = "pvh"\n'
                f'kernel = "{self.kernel}"\n'
                f'memory = {self.memory}\n'
                f'vcpus = {self.vcpus}\n'
                f'cmdline = "{self.cmdline}"\n'
                'on_crash = "preserve"\n'
                'on_poweroff = "preserve"\n')

    def create(self, timeout: float = 120, paused: bool = False) -> "Guest":
        if not os.path.isfile(self.kernel):
            raise LabError(f"test guest kernel {self.kernel} does not exist (build it with make -C lab/guest O=...)")
        fd, cfg = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".cfg")
        with os.fdopen(fd, "w") as f:
            f.write(self.config_text())
        log(f"xl create {'-p ' if paused else ''}{self.name} (cmdline '{self.cmdline}')")
        t0 = time.monotonic()
        xl("create", *(["-p"] if paused else []), cfg, timeout=timeout)
        self.domid = wait_until(lambda: domid_of(self.name), 30, f"domain {self.name} to appear in xl list")
        stage(f"guest-created {self.name} domid={self.domid} in {time.monotonic() - t0:.1f}s")
        return self

    def console(self) -> str:
        """The guest's port-0xE9 output, as it appears in ``xl dmesg`` (``(dN) ...``)."""
        if self.domid is None:
            return ""
        pat = re.compile(rf"\(d{self.domid}\) ?(.*)")
        lines = []
        for line in xl_dmesg().splitlines():
            m = pat.search(line)
            if m:
                lines.append(m.group(1))
        return "\n".join(lines)

    def state(self) -> str:
        """The state letters from ``xl list`` (r, b, p, s, c, d), or '' if gone."""
        out = run_cmd(["xl", "list", self.name], timeout=30, check=False)
        for line in out.splitlines()[1:]:
            f = line.split()
            if len(f) >= 5 and f[0] == self.name:
                return f[4].replace("-", "")
        return ""

    def unpause(self) -> None:
        xl("unpause", self.name)

    def destroy(self) -> None:
        if domid_of(self.name) is not None:
            run_cmd(["xl", "destroy", self.name], timeout=60, check=False)


class Context:
    """What a scenario gets: guest creation, checks, data for the host."""

    def __init__(self, scenario: str, guest_kernel: str, variant: str = "unknown"):
        self.scenario = scenario
        self.guest_kernel = guest_kernel
        #: "plain" (stock Xen), "patched" (hvfilter built in) or "unknown"
        self.variant = variant
        self.checks: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}
        self.guests: list[Guest] = []

    def create_guest(self, cmdline: str = "", memory: int = 32, vcpus: int = 1,
                     name: Optional[str] = None, paused: bool = False) -> Guest:
        """Create a test guest (``paused``: ``xl create -p``, start it with ``guest.unpause()``)."""
        g = Guest(name or f"hvlab-{self.scenario}-{len(self.guests)}".replace("_", "-"),
                  self.guest_kernel, cmdline, memory, vcpus)
        self.guests.append(g)
        return g.create(paused=paused)

    def check(self, name: str, ok: bool, **detail: Any) -> bool:
        ok = bool(ok)
        self.checks.append({"name": name, "ok": ok, **detail})
        log(f"check {'PASS' if ok else 'FAIL'}: {name}" + (f" {detail}" if not ok and detail else ""))
        return ok

    def require(self, name: str, ok: bool, **detail: Any) -> None:
        """Like check, but stop the scenario when it fails."""
        if not self.check(name, ok, **detail):
            raise LabError(f"required check failed: {name}")

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c["ok"] for c in self.checks)


def probe_guest(ctx: "Context") -> Any:
    """Boot a throw-away test guest and return its published info page.

    The guest image is the same every time, so what it publishes at boot
    (the kernel function's first instruction, the fixed page-table roots of
    its processes) holds for the guests a scenario creates afterwards.  This
    lets a scenario plant a breakpoint before a guest's first instruction.
    """
    import guestinfo
    from libvmi import INIT_DOMAINNAME, Libvmi, VMIMode

    g = ctx.create_guest("nproc=1 rounds=1")
    vmi = Libvmi(g.name, INIT_DOMAINNAME, mode=VMIMode.XEN, partial=True)
    try:
        def published() -> Any:
            buf, _ = vmi.read_pa(guestinfo.INFO_GPA, guestinfo.INFO_SIZE)
            try:
                info = guestinfo.parse(buf)
            except ValueError:
                return None
            return info if info.kfunc_insn and info.procs and info.procs[0].kroot else None

        return wait_until(published, 60, "the probe guest publishing its info page")
    finally:
        vmi.destroy()
        g.destroy()


def guest_info(vmi: Any) -> Any:
    """The test guest's info page read through LibVMI, or None until it is published."""
    import guestinfo

    buf, _ = vmi.read_pa(guestinfo.INFO_GPA, guestinfo.INFO_SIZE)
    try:
        return guestinfo.parse(buf)
    except ValueError:
        return None


def listen_until_guest_stops(vmi: Any, limit_s: float, what: str,
                             after_listen: Optional[Callable[[], None]] = None) -> float:
    """Serve LibVMI events until the test guest stops by itself (``rounds=N``).

    ``after_listen`` runs after every ``listen`` (e.g. to re-raise an error a
    callback stored).  Returns the seconds it took; raises LabError naming
    ``what`` after ``limit_s``.
    """
    import guestinfo

    t0 = time.monotonic()
    while True:
        vmi.listen(100)
        if after_listen is not None:
            after_listen()
        info = guest_info(vmi)
        if info is not None and info.state not in (guestinfo.STATE_BOOT, guestinfo.STATE_RUNNING):
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit_s:
            raise LabError(f"{what} did not finish within {limit_s} s")


def stop_events(vmi: Any, *events: Any) -> None:
    """Unsubscribe LibVMI events safely: pause, answer what is pending, clear, resume.

    Pending requests are answered before ``clear_event``: LibVMI's listen
    fails on a request whose event is no longer registered.  ``listen(0)``
    reports failure when nothing is pending, so it polls with a short timeout.
    """
    vmi.pause_vm()
    try:
        while vmi.are_events_pending() > 0:
            vmi.listen(10)
        for ev in events:
            vmi.clear_event(ev)
    finally:
        vmi.resume_vm()


def plant_int3(undo: "Cleanup", vmi: Any, dom: Any, gpa: int, insn: bytes) -> None:
    """Register ``insn`` with hvfilter and write an int3 over its first byte at ``gpa``.

    Both steps are undone by ``undo``: the byte restored, the breakpoint removed.
    """
    dom.add_breakpoint(gpa, insn)
    undo.add("unregistering the breakpoint", dom.remove_breakpoint, gpa)
    vmi.write_8_pa(gpa, 0xCC)
    undo.add("restoring the breakpointed byte", vmi.write_pa, gpa, insn[:1])


class Cleanup:
    """Undo steps, run in reverse order of registration when the block ends.

    A step that fails is logged and the others still run, so one broken
    step cannot leave a planted int3, a registered event or installed rules
    behind.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []

    def add(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        self._steps.append((what, fn, args))

    def __enter__(self) -> "Cleanup":
        return self

    def __exit__(self, *exc: Any) -> None:
        while self._steps:
            what, fn, args = self._steps.pop()
            try:
                fn(*args)
            except Exception as e:
                log(f"cleanup: {what} failed: {e!r}")
