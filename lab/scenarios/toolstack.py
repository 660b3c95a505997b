"""Stock toolstack sanity: Xen runs HVM/PVH with HAP, xl creates the test guest,
the guest runs and prints on its debug console (port 0xE9, seen in xl dmesg)."""

from hvlab import Context, run_cmd, wait_until

TIMEOUT = 180


def run(ctx: Context) -> None:
    info = run_cmd(["xl", "info"])
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    ctx.data["xen_version"] = f"{fields.get('xen_major')}.{fields.get('xen_minor')}{fields.get('xen_extra')}"
    ctx.data["virt_caps"] = fields.get("virt_caps")
    ctx.check("Xen offers HVM guests", "hvm" in fields.get("virt_caps", ""), virt_caps=fields.get("virt_caps"))
    ctx.check("Xen uses hardware-assisted paging (HAP)", "hap" in fields.get("virt_caps", ""),
              virt_caps=fields.get("virt_caps"))
    g = ctx.create_guest("")
    ctx.check("xl create gave the guest a domid", g.domid is not None and g.domid > 0, domid=g.domid)
    console = wait_until(g.console, 60, "the guest's first line on its debug console")
    ctx.data["guest_console_head"] = console.splitlines()[:10]
    ctx.check("the guest prints on its debug console", bool(console))
    state = g.state()
    ctx.check("the guest is running or blocked, not crashed", state in ("r", "b"), state=state)
