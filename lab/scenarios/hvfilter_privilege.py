"""A guest may not use XEN_DOMCTL_hvfilter_op, neither on dom0 nor on itself.

The test guest issues the domctl itself (``domctl=1``, lab/guest/README.md,
"Privilege test"): hypercall 36 with ``cmd`` 0x4846 and a zero payload,
against dom0, DOMID_SELF and its own domain id, and records the three
return values in its info page.  The zero payload is a get_info with
``abi_version`` 0, so a call that got past the privilege check would end in
the handler's -EPROTONOSUPPORT, not -EPERM: -EPERM proves XSM refused it.
DOMID_SELF is not a domain id for ``do_domctl``, whose lookup fails first
(-ESRCH), as on stock Xen.  From dom0 the guest's hvfilter state is then
checked untouched.
"""

from __future__ import annotations

import errno

import guestinfo
from hvlab import Context, wait_until

TIMEOUT = 180


def run(ctx: Context) -> None:
    if ctx.variant != "patched":
        ctx.require("runs on the patched hypervisor (XEN_VARIANT=patched)", False, variant=ctx.variant)
    from libvmi import INIT_DOMAINNAME, Libvmi, VMIMode

    from hvfilter._lowlevel import ShimControl

    ctl = ShimControl.open_xen()
    g = ctx.create_guest("domctl=1 nproc=1 rounds=1")
    vmi = Libvmi(g.name, INIT_DOMAINNAME, mode=VMIMode.XEN, partial=True)
    try:
        def recorded() -> object:
            buf, _ = vmi.read_pa(guestinfo.INFO_GPA, guestinfo.INFO_SIZE)
            info = guestinfo.parse(buf)
            return info if info.flags & guestinfo.F_DOMCTL_DONE and info.consistent else None

        info = wait_until(recorded, 60, "the guest recording its domctl results")
        line = wait_until(lambda: [ln for ln in g.console().splitlines() if ln.startswith("HVFG domctl")],
                          30, "the guest's 'HVFG domctl' console line")[0]
        ctx.data.update(domctl_ret_dom0=info.domctl_ret_dom0, domctl_ret_self=info.domctl_ret_self,
                        domctl_ret_own=info.domctl_ret_own, own_domid=info.own_domid,
                        domid=g.domid, console=line)
        ctx.check("the guest issued the domctl under Xen", info.xen and info.opt_domctl == 1,
                  flags=hex(info.flags))
        ctx.check("the guest knows its own domain id (CPUID leaf base+4)",
                  bool(info.flags & guestinfo.F_OWN_DOMID) and info.own_domid == g.domid,
                  own_domid=info.own_domid, domid=g.domid)
        ctx.check("guest -> hvfilter_op on dom0: -EPERM", info.domctl_ret_dom0 == -errno.EPERM,
                  ret=info.domctl_ret_dom0)
        ctx.check("guest -> hvfilter_op on its own domid: -EPERM", info.domctl_ret_own == -errno.EPERM,
                  ret=info.domctl_ret_own)
        ctx.check("guest -> hvfilter_op on DOMID_SELF: -ESRCH (do_domctl's lookup, as stock Xen)",
                  info.domctl_ret_self == -errno.ESRCH, ret=info.domctl_ret_self)
        ctx.check("the console line carries the same values",
                  f"dom0={info.domctl_ret_dom0} self={info.domctl_ret_self} own={info.domctl_ret_own}" in line,
                  line=line)
        gi = ctl.get_info(g.domid)
        ctx.data["info_after"] = {"generation": gi.generation, "nr_rules": gi.nr_rules,
                                  "nr_sets": gi.nr_sets, "nr_breakpoints": gi.nr_breakpoints}
        ctx.check("the guest's hvfilter state is untouched (dom0's get_info)",
                  (gi.generation, gi.nr_rules, gi.nr_sets, gi.nr_breakpoints) == (0, 0, 0, 0),
                  **ctx.data["info_after"])
    finally:
        vmi.destroy()
        ctl.close()
