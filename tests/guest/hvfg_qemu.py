"""Boot the hvfilter test guest under plain QEMU TCG (no Xen) and look at it
from outside: the debugcon console (port 0xE9) and the info page, read with
QMP ``pmemsave`` while the VM is stopped (like a VMI tool that pauses the
domain).  Every wait polls a condition against a deadline."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import guestinfo

QEMU = "qemu-system-x86_64"
POLL = 0.02  # seconds between two polls of a condition (not a synchronisation)
T = TypeVar("T")


class GuestError(AssertionError):
    pass


def find_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise GuestError(
            f"{QEMU} not found: the guest tests boot the guest under QEMU TCG. "
            "Install it with `make deps` (Debian package qemu-system-x86)."
        )
    return path


def kv(line: str) -> dict[str, str]:
    """The key=value pairs of a console line."""
    return dict(re.findall(r"(\w+)=(\S+)", line))


class QMP:
    def __init__(self, path: Path, deadline: float) -> None:
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"QMP socket {path} did not come up") from None
                time.sleep(POLL)
        self.sock.settimeout(max(1.0, deadline - time.monotonic()))
        self.buf = b""
        self._recv()  # greeting
        self.cmd("qmp_capabilities")

    def _recv(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise GuestError("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def cmd(self, name: str, **args: Any) -> Any:
        self.sock.sendall(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        while True:
            msg = self._recv()
            if "event" in msg:
                continue
            if "error" in msg:
                raise GuestError(f"QMP {name}: {msg['error']}")
            return msg.get("return")

    def close(self) -> None:
        self.sock.close()


class GDB:
    """A minimal GDB remote-protocol client for QEMU's gdbstub: stop, set
    breakpoints (QEMU's own, the guest's memory is not modified), continue
    until a stop, read registers and virtual memory of the current context."""

    REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")

    def __init__(self, path: Path, deadline: float) -> None:
        self.deadline = deadline
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"gdbstub socket {path} did not come up") from None
                time.sleep(POLL)
        self.sock.settimeout(max(1.0, deadline - time.monotonic()))
        self.buf = b""
        self.bps: set[int] = set()
        # QEMU stops the VM when a debugger connects and may report that stop
        # before answering: skip stop replies until the qSupported answer.
        self._send("qSupported")
        while "PacketSize" not in self._packet():
            pass

    def _send(self, data: str) -> None:
        csum = sum(data.encode()) & 0xFF
        self.sock.sendall(f"${data}#{csum:02x}".encode())

    def _packet(self) -> str:
        while True:
            while b"#" not in self.buf or len(self.buf) < self.buf.index(b"#") + 3:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise GuestError("gdbstub connection closed")
                self.buf += chunk
            start = self.buf.find(b"$")
            end = self.buf.index(b"#", max(start, 0))
            if start < 0 or start > end:  # acks and noise before a packet
                self.buf = self.buf[end + 3:]
                continue
            data = self.buf[start + 1:end].decode()
            self.buf = self.buf[end + 3:]
            self.sock.sendall(b"+")
            return data

    def request(self, data: str) -> str:
        self._send(data)
        return self._packet()

    def stop_reason(self) -> str:
        """The VM is stopped from the moment the debugger connects."""
        return self.request("?")

    def cont(self) -> str:
        """Continue until the next stop (a breakpoint); the stop reply.  Like
        gdb, step over a breakpoint we are sitting on first (QEMU would stop
        on it again)."""
        rip = self.regs()["rip"]
        if rip in self.bps:
            self.request(f"z0,{rip:x},1")
            self.request("s")
            self.request(f"Z0,{rip:x},1")
        return self.request("c")

    def set_bp(self, addr: int) -> None:
        if self.request(f"Z0,{addr:x},1") != "OK":
            raise GuestError(f"gdbstub: cannot set a breakpoint at {addr:#x}")
        self.bps.add(addr)

    def clear_bp(self, addr: int) -> None:
        self.request(f"z0,{addr:x},1")
        self.bps.discard(addr)

    def regs(self) -> dict[str, int]:
        raw = bytes.fromhex(self.request("g"))
        return {name: int.from_bytes(raw[8 * i:8 * i + 8], "little")
                for i, name in enumerate(self.REGS)}

    def read(self, addr: int, size: int) -> bytes:
        out = b""
        while len(out) < size:
            n = min(1024, size - len(out))
            reply = self.request(f"m{addr + len(out):x},{n:x}")
            if reply.startswith("E"):
                raise GuestError(f"gdbstub: cannot read {n} bytes at {addr + len(out):#x}")
            out += bytes.fromhex(reply)
        return out

    def close(self) -> None:
        self.sock.close()


class Guest:
    """One QEMU running guest.elf with a command line."""

    def __init__(self, elf: Path, cmdline: str, workdir: Path, mem_mb: int = 32,
                 timeout: float = 60.0) -> None:
        self.workdir = workdir
        self.log = workdir / "console.log"
        # Unix socket paths are limited to 107 bytes: keep them short,
        # whatever the length of pytest's temporary directories.
        self.sockdir = Path(tempfile.mkdtemp(prefix="hvfg-"))
        self.qmp_path = self.sockdir / "qmp"
        self.dump = workdir / "info.bin"
        self.gdb_path = self.sockdir / "gdb"
        self.cmdline = cmdline
        self.timeout = timeout
        argv = [
            find_qemu(), "-accel", "tcg", "-cpu", "qemu64", "-m", str(mem_mb),
            "-display", "none", "-no-reboot", "-nodefaults",
            "-serial", "none", "-monitor", "none",
            "-debugcon", f"file:{self.log}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-chardev", f"socket,id=gdb0,path={self.gdb_path},server=on,wait=off",
            "-gdb", "chardev:gdb0",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", str(elf), "-append", cmdline,
        ]
        self.stderr = open(workdir / "qemu.stderr", "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.stderr, stderr=self.stderr)
        self.qmp: QMP | None = None
        self._gdb: GDB | None = None

    # -- console ---------------------------------------------------------
    def console(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def complete_lines(self) -> list[str]:
        """Console lines the guest has finished writing (not the one it is writing)."""
        return self.console().split("\n")[:-1]

    def lines(self, prefix: str) -> list[str]:
        return [ln for ln in self.complete_lines() if ln.startswith(prefix)]

    def _fail(self, what: str) -> GuestError:
        tail = "\n".join(self.console().splitlines()[-15:])
        err = (self.workdir / "qemu.stderr").read_text(errors="replace")[-2000:]
        return GuestError(f"{what} (cmdline {self.cmdline!r}, qemu rc={self.proc.poll()})\n"
                          f"--- console tail ---\n{tail}\n--- qemu stderr ---\n{err}")

    def poll_until(self, what: str, cond: Callable[[], T | None],
                   timeout: float | None = None) -> T:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            r = cond()
            if r is not None and r is not False:
                return r
            if time.monotonic() > deadline:
                raise self._fail(f"timed out waiting for {what}")
            time.sleep(POLL)

    def wait_line(self, pattern: str, count: int = 1, timeout: float | None = None) -> list[str]:
        """Wait until `count` console lines match `pattern` (re.search)."""
        rx = re.compile(pattern)

        def cond() -> list[str] | None:
            hits = [ln for ln in self.complete_lines() if rx.search(ln)]
            if len(hits) >= count:
                return hits
            if self.proc.poll() is not None:
                raise self._fail(f"QEMU exited before {count} line(s) matching {pattern!r}")
            return None

        return self.poll_until(f"{count} line(s) matching {pattern!r}", cond, timeout)

    # -- info page -------------------------------------------------------
    def _qmp(self) -> QMP:
        if self.qmp is None:
            self.qmp = QMP(self.qmp_path, time.monotonic() + self.timeout)
        return self.qmp

    def snapshot(self) -> guestinfo.GuestInfo | None:
        """Pause the VM, dump the info page, resume.  None if the page is not
        initialised yet or was caught inside an update group."""
        q = self._qmp()
        q.cmd("stop")
        try:
            q.cmd("pmemsave", val=guestinfo.INFO_GPA, size=guestinfo.INFO_SIZE,
                  filename=str(self.dump))
        finally:
            q.cmd("cont")
        data = self.dump.read_bytes()
        if int.from_bytes(data[:8], "little") != guestinfo.INFO_MAGIC:
            return None
        info = guestinfo.parse(data)
        return info if info.consistent else None

    def wait_info(self, what: str, pred: Callable[[guestinfo.GuestInfo], bool],
                  timeout: float | None = None) -> guestinfo.GuestInfo:
        def cond() -> guestinfo.GuestInfo | None:
            if self.proc.poll() is not None:
                raise self._fail(f"QEMU exited while waiting for {what}")
            info = self.snapshot()
            return info if info is not None and pred(info) else None

        return self.poll_until(what, cond, timeout)

    def wait_done(self, timeout: float | None = None) -> guestinfo.GuestInfo:
        return self.wait_info("state done/halted",
                              lambda i: i.state in (guestinfo.STATE_DONE, guestinfo.STATE_HALTED),
                              timeout)

    def wait_exit(self, timeout: float | None = None) -> int:
        try:
            return self.proc.wait(timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise self._fail("timed out waiting for QEMU to exit") from None

    def gdb(self) -> GDB:
        """The gdbstub, connected on first use, which stops the VM.  Don't mix
        with snapshot(): QMP stop/cont and the gdbstub both control the run
        state."""
        if self._gdb is None:
            self._gdb = GDB(self.gdb_path, time.monotonic() + self.timeout)
        return self._gdb

    def close(self) -> None:
        if self._gdb is not None:
            self._gdb.close()
        if self.qmp is not None:
            self.qmp.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)


def build_guest(outdir: Path) -> Path:
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(["make", "-s", "-C", str(root / "lab" / "guest"), f"O={outdir}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise GuestError(f"building the guest failed:\n{r.stdout}\n{r.stderr}")
    elf = outdir / "guest.elf"
    assert elf.is_file(), elf
    return elf

