"""The project's own Python package in dom0 against the real hypervisor.

Imports ``hvfilter`` (installed in dom0 from the host-built wheel), opens the
``xen`` backend (libxencall + privcmd through the cffi shim) and asks for the
test guest's hvfilter info (XEN_DOMCTL_hvfilter_op).  Stock Xen does not
know the domctl, so on the plain variant the answer must be the package's
"not patched" error (ENOSYS); on the patched variant it must succeed.
"""

from hvlab import Context, wait_until

TIMEOUT = 180


def run(ctx: Context) -> None:
    try:
        import hvfilter
        from hvfilter import errors
    except Exception as e:
        ctx.require("import hvfilter in dom0", False, error=repr(e))
        return
    ctx.check("import hvfilter in dom0", True, file=hvfilter.__file__)
    g = ctx.create_guest("nproc=2")
    wait_until(g.console, 60, "the guest's first line on its debug console")
    with hvfilter.open("xen") as hyp:
        ctx.check("hvfilter.open('xen') uses the xen backend in dom0", hyp.backend == "xen", backend=hyp.backend)
        dom = hyp.domain(g.domid)
        try:
            info = dom.info()
        except errors.NotPatchedError as e:
            ctx.data["info_error"] = str(e)
            ctx.check("info() on the plain hypervisor raises NotPatchedError (ENOSYS)",
                      ctx.variant == "plain", variant=ctx.variant, error=str(e))
            return
        except errors.HvfilterError as e:
            ctx.check("info() answers with the expected outcome for this hypervisor", False,
                      variant=ctx.variant, error=f"{type(e).__name__}: {e}")
            return
        ctx.data["info"] = repr(info)
        ctx.check("info() succeeds on the patched hypervisor", ctx.variant == "patched",
                  variant=ctx.variant, info=repr(info)[:500])
