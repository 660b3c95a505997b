"""Error paths: every exception of the errno table, from a real code path."""

from __future__ import annotations

import errno
import os

import pytest

import hvfilter as hv
from hvfilter import Kind, on
from hvfilter._binding import domctl_interface_version
from hvfilter.errors import ERRNO_TABLE, OPEN_ERRNO_TABLE, error_for

PROG = hv.compile([on(Kind.CPUID).then(hv.pass_)])


def _sim(**cfg: object) -> hv.Hypervisor:
    return hv.open("sim", sim=hv.SimConfig(**cfg))  # type: ignore[arg-type]


def test_xen_backend_fails_cleanly_without_xen():
    if os.path.exists("/dev/xen/privcmd"):       # dom0 of a Xen host (the lab)
        with hv.open("xen") as hyp:
            assert hyp.backend == "xen" and hyp.fallback_reason is None
        return
    with pytest.raises(hv.NotOnXenError) as ei:
        hv.open("xen")
    msg = str(ei.value)
    assert "not running on Xen" in msg or "libxencall" in msg
    assert "remedy" in msg and ei.value.op == "open"
    # auto falls back to the simulator and says why
    with hv.open() as hyp:
        assert hyp.backend == "sim" and hyp.fallback_reason


def test_not_patched():
    with _sim(unpatched=True) as hyp:
        hyp.create_domain(1)
        with pytest.raises(hv.NotPatchedError, match="not patched with hvfilter") as ei:
            hyp.domain(1).info()
        assert ei.value.errno == errno.ENOSYS and ei.value.domain == 1


def test_domctl_version_mismatch():
    with _sim(domctl_version=domctl_interface_version() + 1) as hyp:
        hyp.create_domain(1)
        with pytest.raises(hv.DomctlVersionError, match="domctl interface version"):
            hyp.domain(1).install(PROG)


def test_abi_version_mismatch():
    with _sim(abi_version=hv.abi.INTERFACE_VERSION + 0x10000) as hyp:
        hyp.create_domain(1)
        with pytest.raises(hv.AbiVersionError) as ei:
            hyp.domain(1).stats()
        assert isinstance(ei.value, hv.VersionMismatchError)
        assert ei.value.errno == errno.EPROTONOSUPPORT


def test_permission():
    with _sim(unprivileged=True) as hyp:
        hyp.create_domain(1)
        with pytest.raises(hv.PermissionDeniedError):
            hyp.domain(1).info()
    with hv.open("sim") as hyp, pytest.raises(hv.PermissionDeniedError, match="domain 0"):
        hyp.domain(0).install(PROG)


def test_no_such_domain(hyp):
    with pytest.raises(hv.NoSuchDomainError, match="stats_get on domain 42: no such domain"):
        hyp.domain(42).stats()
    hyp.create_domain(42)
    hyp.destroy_domain(42)
    with pytest.raises(hv.NoSuchDomainError):
        hyp.domain(42).info()


def test_unsupported(hyp):
    pv = hyp.create_domain(2, hvm=False)
    with pytest.raises(hv.UnsupportedError, match="HVM or PVH"):
        pv.install(PROG)
    with pytest.raises(hv.UnsupportedError, match="only simulated domains"):
        hv.Domain(hyp, 3, None).play([])
    with pytest.raises(hv.UnsupportedError, match="LibVMI"):
        hv.Domain(hyp, 3, None).subscribe(hv.Cpuid)


def test_invalid_arguments(dom):
    with pytest.raises(hv.InvalidArgumentError):
        dom.add_breakpoint(0x1000, b"\xcc")               # an int3 is not an instruction
    with pytest.raises(hv.InvalidArgumentError):
        dom.add_breakpoint(0x1000, b"")
    with pytest.raises(hv.InvalidArgumentError):
        dom.add_breakpoint(0x1000, b"\x90" * 16)
    prog = hv.compile([on(Kind.CPUID).when(hv.INDEX.in_(hv.ValueSet("s"))).then(hv.pass_)])
    with dom.install(prog) as inst, pytest.raises(hv.InvalidArgumentError, match="set_add"):
        inst.set("s").add()                                 # empty batch
    with pytest.raises(hv.InvalidArgumentError):
        dom.feed([hv.Cpuid(vcpu=7, leaf=0)])               # the domain has 2 vCPUs


def test_limits_exceeded_by_set_updates(dom):
    s = hv.ValueSet("small", capacity=2, values=(1,))
    with dom.install(hv.compile([on(Kind.CPUID).when(hv.INDEX.in_(s)).then(hv.pass_)])) as inst:
        with pytest.raises(hv.LimitExceededError) as ei:
            inst.set("small").add(2, 3)
        assert ei.value.errno == errno.ENOSPC
        # all or nothing: 2 was not added
        assert dom.feed([hv.Cpuid(0, 2)])[0].action == hv.ActionCode.FORWARD
        inst.set("small").add(2)
        assert dom.feed([hv.Cpuid(0, 2)])[0].action == hv.ActionCode.PASS


def test_not_found_and_already_exists(dom):
    with pytest.raises(hv.NotFoundError, match=r"set_add on domain 5: not found"):
        dom._ctl.set_keys(dom.domid, 0, [1], remove=False)       # no table installed
    with pytest.raises(hv.NotFoundError):
        dom.remove_breakpoint(0x5000)
    dom.add_breakpoint(0x5000, b"\x90")
    with pytest.raises(hv.AlreadyExistsError):
        dom.add_breakpoint(0x5000, b"\x90")
    s = hv.ValueSet("s", values=(1,))
    with dom.install(hv.compile([on(Kind.CPUID).when(hv.INDEX.in_(s)).then(hv.pass_)])) as inst:
        with pytest.raises(hv.NotFoundError):
            inst.set("s").remove(1, 2)                       # 2 is absent: nothing removed
        assert 1 in inst.set("s")
        with pytest.raises(KeyError):
            inst.set("nope")


def test_breakpoint_table_full(dom):
    for i in range(hv.LIMITS.max_breakpoints):
        dom.add_breakpoint(0x10_0000 + i * 16, b"\x90")
    with pytest.raises(hv.LimitExceededError) as ei:
        dom.add_breakpoint(0x1, b"\x90")
    assert ei.value.errno == errno.ENOSPC


def test_double_uninstall_and_stale_installation(dom):
    inst = dom.install(PROG)
    inst.uninstall()
    with pytest.raises(hv.NotInstalledError):
        inst.uninstall()
    first = dom.install(PROG)
    dom.install(PROG)                                       # replaces the first
    with pytest.raises(hv.NotInstalledError):
        first.stats()
    with first:                                             # exiting a stale one is harmless
        pass
    assert dom.info().nr_rules == 1


def test_use_after_close():
    hyp = hv.open("sim")
    dom = hyp.create_domain(1)
    inst = dom.install(PROG)
    hyp.close()
    hyp.close()                                             # idempotent
    for call in (dom.info, dom.stats, lambda: hyp.domain(1), inst.uninstall,
                 lambda: hyp.create_domain(2)):
        with pytest.raises(hv.ClosedError):
            call()


def test_callback_error_is_not_swallowed(dom):
    with dom.install(hv.compile([on(Kind.CPUID).then(hv.forward)])):
        sub = dom.subscribe(hv.Cpuid)

        @sub.on
        def bad(ev: hv.Event) -> None:
            raise ZeroDivisionError("in the tool's callback")

        dom.play([hv.Cpuid(0, 1)])
        with pytest.raises(ZeroDivisionError):
            dom.listen()


@pytest.mark.parametrize("err", sorted(ERRNO_TABLE))
def test_errno_table_messages(err):
    e = error_for(-err, "set_add", 7)
    assert isinstance(e, ERRNO_TABLE[err])
    assert e.errno == err and e.domain == 7 and e.op == "set_add"
    assert str(e).startswith("set_add on domain 7: ")
    assert errno.errorcode[err] in str(e)
    assert "remedy" in str(e)


@pytest.mark.parametrize("err", sorted(OPEN_ERRNO_TABLE))
def test_open_errno_table(err):
    e = error_for(-err, "open")
    assert isinstance(e, OPEN_ERRNO_TABLE[err])
    assert "privcmd" in str(e) or "libxencall" in str(e)


def test_base_error_is_abstract():
    assert all(cls is not hv.HvfilterError for cls in ERRNO_TABLE.values())
    assert isinstance(error_for(-errno.EXDEV, "get_info", 1), hv.UnexpectedError)
    assert isinstance(error_for(-errno.EINVAL, "table_replace", 1), hv.InvalidRuleError)


def test_minor_abi_difference_is_accepted():
    # A minor bump only adds values (hvfilter.h); only the major half must match.
    with _sim(abi_version=hv.abi.INTERFACE_VERSION + 1) as hyp:
        dom = hyp.create_domain(1)
        with dom.install(PROG):
            assert dom.info().abi_version == hv.abi.INTERFACE_VERSION + 1


def test_abi_mismatch_names_both_versions():
    theirs = hv.abi.INTERFACE_VERSION + 0x10000
    with _sim(abi_version=theirs) as hyp:
        hyp.create_domain(1)
        with pytest.raises(hv.AbiVersionError, match=f"hypervisor speaks hvfilter ABI {theirs:#x}"):
            hyp.domain(1).info()


def test_impossible_event_in_a_replay_is_reported_and_skipped(dom):
    with dom.install(PROG):
        sub = dom.subscribe(hv.Cpuid)
        dom.play([hv.Cpuid(0, 1), hv.Cpuid(9, 1), hv.Cpuid(1, 2)])   # vCPU 9 does not exist
        with pytest.raises(hv.InvalidArgumentError, match="sim_feed on domain 5"):
            dom.run()
        dom.run()
        assert dom.stats().kinds[Kind.CPUID].seen == 2
        assert list(sub) == []                      # all passed by the rule
