"""Binding layer: the only module that touches cffi's ``ffi`` and ``lib``.

Everything here converts between cdata and the plain values of ``_raw`` and
returns the shim's result codes (0 or ``-errno``) unchanged; turning codes
into exceptions is the low-level layer's job (``_lowlevel``).  ``Any`` is
confined to this module.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import Any

from hvfilter._native import ffi, lib
from hvfilter._raw import (
    RawCounts,
    RawEvent,
    RawInfo,
    RawRule,
    RawStats,
    RawTable,
    RawVerdict,
)

CData = Any

NR_FIELDS: int = int(lib.XEN_HVFILTER_FIELD_NR)
MAX_CONDS: int = int(lib.XEN_HVFILTER_MAX_CONDS)


def const(name: str) -> int:
    """The value of a constant of the header or the shim, by its C name."""
    return int(getattr(lib, name))


def field_kinds(field: int) -> int:
    """The evaluator's ``hvf_field_kinds[field]``: kinds the field exists for."""
    return int(lib.hvf_field_kinds[field])


def field_cmps(field: int) -> int:
    """The evaluator's ``hvf_field_cmps[field]``: bitmap of allowed operators."""
    return int(lib.hvf_field_cmps[field])


def action_kinds(action: int) -> int:
    """The evaluator's ``hvf_action_kinds[action]``: kinds the action may apply to."""
    return int(lib.hvf_action_kinds[action])


def sizeof(ctype: str) -> int:
    """``ffi.sizeof`` of a C type of the declarations."""
    return int(ffi.sizeof(ctype))


def offsetof(ctype: str, field: str) -> int:
    """``ffi.offsetof`` of a field of a C type of the declarations."""
    return int(ffi.offsetof(ctype, field))


def domctl_interface_version() -> int:
    """The ``XEN_DOMCTL_INTERFACE_VERSION`` the shim was built against."""
    return int(lib.hvf_domctl_interface_version())


# ---------------------------------------------------------------------------
# Tables.


def _fill_rule(c: CData, r: RawRule) -> None:
    c.kinds = r.kinds
    c.action = r.action
    c.fallback = r.fallback
    c.nr_conds = r.nr_conds
    c.pad0 = r.pad0
    c.sample = r.sample
    c.pad1 = r.pad1
    for j, rc in enumerate(r.conds[:MAX_CONDS]):
        cc = c.conds[j]
        cc.field = rc.field
        cc.cmp = rc.cmp
        cc.flags = rc.flags
        cc.set_id = rc.set_id
        cc.pad = rc.pad
        cc.mask = rc.mask
        cc.value = rc.value
        cc.value2 = rc.value2


def _c_table(t: RawTable) -> tuple[CData, CData, CData]:
    rules = ffi.new("struct xen_hvfilter_rule[]", max(1, len(t.rules)))
    for i, r in enumerate(t.rules):
        _fill_rule(rules[i], r)
    sets = ffi.new("struct xen_hvfilter_set[]", max(1, len(t.sets)))
    for i, s in enumerate(t.sets):
        cs = sets[i]
        ffi.memmove(cs.name, s.name[:16], min(16, len(s.name)))
        cs.mask = s.mask
        cs.capacity = s.capacity
        cs.nr_init = s.nr_init
        cs.pad = s.pad
    keys = ffi.new("uint64_t[]", list(t.keys) or [0])
    return rules, sets, keys


def table_check(t: RawTable, supported_kinds: int) -> tuple[int, int, int]:
    """Run the evaluator's ``hvf_table_check``: (rc, bad_rule, bad_cond)."""
    rules, sets, _keys = _c_table(t)
    bad = ffi.new("int[2]")
    rc = lib.hvf_table_check(rules, len(t.rules), sets, len(t.sets), len(t.keys),
                             supported_kinds, bad, bad + 1)
    return int(rc), int(bad[0]), int(bad[1])


def rule_bytes(r: RawRule) -> bytes:
    """The 272 bytes of a rule as the hypervisor receives them (for dumps)."""
    c = ffi.new("struct xen_hvfilter_rule *")
    _fill_rule(c, r)
    return bytes(ffi.buffer(c))


def bp_check(gpa: int, insn: bytes, remove: bool) -> int:
    """Run the evaluator's ``hvf_bp_check`` on a breakpoint."""
    return int(lib.hvf_bp_check(_c_bp(gpa, insn), remove))


def _c_bp(gpa: int, insn: bytes) -> CData:
    bp = ffi.new("struct xen_hvfilter_bp *")
    bp.gpa = gpa
    bp.insn_len = min(len(insn), 255)
    ffi.memmove(bp.insn, insn[:16], min(16, len(insn)))
    return bp


# ---------------------------------------------------------------------------
# Handles and operations.


class Handle:
    """An open ``struct hvf_handle *``; closed explicitly or when collected."""

    def __init__(self, ptr: CData) -> None:
        self._ptr = ffi.gc(ptr, lib.hvf_close)

    @property
    def ptr(self) -> CData:
        """The cdata pointer."""
        return self._ptr

    @property
    def is_sim(self) -> bool:
        """True for the simulator backend."""
        return bool(lib.hvf_backend(self._ptr) == lib.HVF_BACKEND_SIM)

    def close(self) -> None:
        """Release the handle now (idempotent)."""
        if self._ptr is not None:
            ffi.release(self._ptr)
            self._ptr = None


def open_xen() -> tuple[int, Handle | None]:
    """``hvf_open_xen``: (rc, handle)."""
    out = ffi.new("struct hvf_handle **")
    rc = int(lib.hvf_open_xen(out))
    return rc, (Handle(out[0]) if rc == 0 else None)


def open_sim(domctl_version: int, abi_version: int, kinds: int, unpatched: bool,
             unprivileged: bool, seed: int) -> tuple[int, Handle | None]:
    """``hvf_open_sim`` with the simulated hypervisor's personality."""
    cfg = ffi.new("struct hvf_sim_config *")
    cfg.domctl_version = domctl_version
    cfg.abi_version = abi_version
    cfg.kinds = kinds
    cfg.unpatched = int(unpatched)
    cfg.unprivileged = int(unprivileged)
    cfg.seed = seed
    out = ffi.new("struct hvf_handle **")
    rc = int(lib.hvf_open_sim(out, cfg))
    return rc, (Handle(out[0]) if rc == 0 else None)


def op_get_info(h: Handle, domid: int) -> tuple[int, RawInfo | None]:
    """``hvf_op_get_info``; on -EPROTONOSUPPORT the info carries Xen's ABI version."""
    info = ffi.new("struct xen_hvfilter_info *")
    rc = int(lib.hvf_op_get_info(h.ptr, domid, info))
    if rc and rc != -errno.EPROTONOSUPPORT:
        return rc, None
    return rc, RawInfo(
        abi_version=info.abi_version, max_rules=info.max_rules,
        max_conds=info.max_conds, max_total_conds=info.max_total_conds,
        max_sets=info.max_sets, max_set_entries=info.max_set_entries,
        max_breakpoints=info.max_breakpoints, kinds=info.kinds,
        actions=info.actions, nr_rules=info.nr_rules, nr_sets=info.nr_sets,
        nr_breakpoints=info.nr_breakpoints, generation=info.generation,
        mem_bytes=info.mem_bytes)


def op_table_replace(h: Handle, domid: int, t: RawTable) -> int:
    """``hvf_op_table_replace``."""
    rules, sets, keys = _c_table(t)
    return int(lib.hvf_op_table_replace(h.ptr, domid, rules, len(t.rules), sets,
                                        len(t.sets), keys, len(t.keys)))


def op_set_keys(h: Handle, domid: int, set_id: int, keys: Sequence[int],
                remove: bool) -> int:
    """``hvf_op_set_add`` / ``hvf_op_set_remove``."""
    ck = ffi.new("uint64_t[]", list(keys) or [0])
    fn = lib.hvf_op_set_remove if remove else lib.hvf_op_set_add
    return int(fn(h.ptr, domid, set_id, ck, len(keys)))


def op_set_flush(h: Handle, domid: int, set_id: int) -> int:
    """``hvf_op_set_flush``."""
    return int(lib.hvf_op_set_flush(h.ptr, domid, set_id))


def op_bp_add(h: Handle, domid: int, gpa: int, insn: bytes) -> int:
    """``hvf_op_bp_add``."""
    return int(lib.hvf_op_bp_add(h.ptr, domid, _c_bp(gpa, insn)))


def op_bp_remove(h: Handle, domid: int, gpa: int) -> int:
    """``hvf_op_bp_remove``."""
    return int(lib.hvf_op_bp_remove(h.ptr, domid, gpa))


def _counts(c: CData) -> RawCounts:
    return RawCounts(seen=c.seen, forwarded=c.forwarded, passed=c.passed,
                     emulated=c.emulated, sampled_out=c.sampled_out,
                     fallbacks=c.fallbacks)


def op_stats_get(h: Handle, domid: int) -> tuple[int, RawStats | None]:
    """``hvf_op_stats_get``."""
    st = ffi.new("struct xen_hvfilter_stats *")
    rc = int(lib.hvf_op_stats_get(h.ptr, domid, st))
    if rc:
        return rc, None
    n = min(int(st.nr_rules), int(lib.XEN_HVFILTER_MAX_RULES))
    return rc, RawStats(
        generation=int(st.generation), nr_rules=int(st.nr_rules),
        kinds=tuple(_counts(st.kinds[i]) for i in range(int(lib.XEN_HVFILTER_EV_NR))),
        unmatched=_counts(st.unmatched),
        rules=tuple(_counts(st.rules[i]) for i in range(n)))


def op_stats_reset(h: Handle, domid: int) -> int:
    """``hvf_op_stats_reset``."""
    return int(lib.hvf_op_stats_reset(h.ptr, domid))


def op_raw(h: Handle, domid: int, op: int, abi_version: int, union: bytes) -> tuple[int, bytes]:
    """``hvf_op_raw``: issue ``op`` with this ``abi_version`` and these union bytes.

    ``union`` (at most 64 bytes, zero-extended) is the payload exactly as the
    hypervisor will read it, padding included; nothing is checked here.
    Returns the result code and the union as the hypervisor left it.
    """
    if len(union) > 64:
        raise ValueError("the op union is 64 bytes")
    c = ffi.new("struct xen_domctl_hvfilter_op *")
    c.op = op
    c.abi_version = abi_version
    ffi.memmove(ffi.addressof(c.u), union, len(union))
    rc = int(lib.hvf_op_raw(h.ptr, domid, c))
    return rc, bytes(ffi.buffer(ffi.addressof(c.u)))


def sim_domain_create(h: Handle, domid: int, nr_vcpus: int, hvm: bool) -> int:
    """``hvf_sim_domain_create``."""
    return int(lib.hvf_sim_domain_create(h.ptr, domid, nr_vcpus, hvm))


def sim_domain_destroy(h: Handle, domid: int) -> int:
    """``hvf_sim_domain_destroy``."""
    return int(lib.hvf_sim_domain_destroy(h.ptr, domid))


# ---------------------------------------------------------------------------
# Events.


class EventBuffer:
    """A C array of ``struct hvf_event``, filled from Python or a workload."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self._c = ffi.new("struct hvf_event[]", capacity)

    def fill(self, events: Sequence[RawEvent]) -> None:
        """Copy up to ``capacity`` events in; sets ``length``."""
        n = min(len(events), self.capacity)
        for i in range(n):
            e = events[i]
            c = self._c[i]
            c.kind = e.kind
            c.f = list(e.fields[:NR_FIELDS]) + [0] * (NR_FIELDS - len(e.fields))
        self.length = n

    def get(self, i: int) -> RawEvent:
        """Event ``i`` as a RawEvent."""
        return _event(self._c[i])


def _event(c: CData) -> RawEvent:
    return RawEvent(kind=int(c.kind), fields=tuple(int(x) for x in c.f))


def _verdict(v: CData) -> RawVerdict:
    return RawVerdict(action=int(v.action), rule=int(v.rule),
                      insn=bytes(ffi.buffer(v.insn, int(v.insn_len))))


DeliverFn = Callable[[RawEvent, RawVerdict], bool]


class _Delivery:
    """Context of one feed: the Python callback and the exception it raised."""

    def __init__(self, fn: DeliverFn) -> None:
        self.fn = fn
        self.error: BaseException | None = None


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _hvf_py_deliver(ctx: CData, domid: int, ev: CData, v: CData) -> int:
    d: _Delivery = ffi.from_handle(ctx)
    try:
        return 1 if d.fn(_event(ev), _verdict(v)) else 0
    except BaseException as e:
        d.error = e
        return 1


def sim_feed(h: Handle, domid: int, buf: EventBuffer, start: int,
             deliver: DeliverFn | None,
             verdicts: list[RawVerdict] | None = None
             ) -> tuple[int, int, BaseException | None]:
    """``hvf_sim_feed`` over ``buf[start:length]``: (rc, events consumed, error).

    ``deliver`` is called for every forwarded event, from inside the C loop;
    returning True stops the feed after that event.  An exception it raises
    stops the feed too; it is caught in the trampoline (cffi would otherwise
    print and drop it) and returned here, after C has returned, for the
    caller to re-raise once it has recorded the progress.
    """
    n = buf.length - start
    done = ffi.new("size_t *")
    cv = ffi.new("struct hvf_verdict[]", n) if verdicts is not None else ffi.NULL
    error: BaseException | None = None
    if deliver is not None:
        d = _Delivery(deliver)
        handle = ffi.new_handle(d)
        rc = int(lib.hvf_sim_feed(h.ptr, domid, buf._c + start, n, cv,
                                  lib._hvf_py_deliver, handle, done))
        error = d.error
    else:
        rc = int(lib.hvf_sim_feed(h.ptr, domid, buf._c + start, n, cv,
                                  ffi.NULL, ffi.NULL, done))
    if verdicts is not None:
        verdicts.extend(_verdict(cv[i]) for i in range(int(done[0])))
    return rc, int(done[0]), error


class CWorkload:
    """``struct hvf_workload``: the generated guest workload, in C."""

    def __init__(self, params: dict[str, int]) -> None:
        self._p = ffi.new("struct hvf_workload_params *", params)
        out = ffi.new("struct hvf_workload **")
        rc = int(lib.hvf_workload_new(self._p, out))
        if rc:
            raise ValueError(f"invalid workload parameters ({rc})")
        self._w = ffi.gc(out[0], lib.hvf_workload_free)

    def next_into(self, buf: EventBuffer) -> int:
        """Generate up to ``buf.capacity`` events into ``buf``; 0 when over."""
        buf.length = int(lib.hvf_workload_next(self._w, buf._c, buf.capacity))
        return buf.length


def workload_root(params: dict[str, int], proc: int, user: bool) -> int:
    """``hvf_workload_root``: the CR3 value of a process of the workload."""
    p = ffi.new("struct hvf_workload_params *", params)
    return int(lib.hvf_workload_root(p, proc, user))
