"""Regenerate docs/api.md from the installed package's docstrings (make api-docs)."""

import errno as E
import inspect
from pathlib import Path

import hvfilter as hv
import hvfilter.libvmi_adapter as lva

HEAD = '''# API reference

Everything public is importable from `hvfilter` (`import hvfilter as hv`).
The package has three layers, as pynacl and argon2-cffi do:

- `hvfilter._binding`: the only module that touches cffi (`ffi`, `lib`);
  converts between cdata and plain values, returns the shim's result codes.
- `hvfilter._lowlevel`: the shim's operations one-to-one, typed, raising the
  exceptions of the errno table; `ControlPlane` is their protocol.
- the public API documented here.

The compiled extension `hvfilter._native` holds the C shim
(`cbindings/hvf_shim.c`) with its two backends, `xen` (XEN_DOMCTL_hvfilter_op
through libxencall, loaded at run time) and `sim` (the in-process hypervisor
model), and the hypervisor's evaluator `xen/common/hvfilter_eval.c`, unchanged.
The package is typed (`py.typed`, mypy strict).

This page is generated from the docstrings by `make api-docs`.

'''
from hvfilter import errors


def sig(o):
    try: return str(inspect.signature(o)).replace("'", "")
    except Exception: return ""
def fenced(d):
    return "```text\n" + d + "\n```\n" if d else ""
sections = [
 ("Opening a hypervisor", [hv.open, hv.SimConfig, hv.Hypervisor]),
 ("Domains", [hv.Domain]),
 ("Installed programs and sets", [hv.Installation, hv.InstalledSet]),
 ("Events and subscriptions", [hv.Subscription, hv.EventSource, hv.Cr3Switch, hv.CrWrite, hv.MsrWrite, hv.Breakpoint, hv.Cpuid, hv.OtherEvent, hv.raw_event, hv.Verdict]),
 ("Rules", [hv.on, hv.Rule, hv.FieldRef, hv.Test, hv.AllOf, hv.AnyOf, hv.ValueSet, hv.process, hv.Forward, hv.Pass, hv.Emulate, hv.Sample, hv.sample]),
 ("Compiling", [hv.compile, hv.Program, hv.check_table, hv.Problem, hv.encode_unchecked]),
 ("On Xen: LibVMI adapter and process scope (hvfilter.libvmi_adapter)", [lva.Monitor, lva.ProcessScope, lva.Planted, lva.Response, lva.LibvmiSource, lva.process_bound_rules]),
 ("Statistics and information", [hv.Counts, hv.Stats, hv.Info]),
 ("The simulated guest workload", [hv.GuestWorkload]),
 ("ABI enumerations and limits", [hv.Kind, hv.Field, hv.Cmp, hv.ActionCode, hv.Limits]),
]
out = []
p = out.append
p(HEAD)
for title, objs in sections:
    p(f"## {title}\n")
    for o in objs:
        name = o.__name__
        if inspect.isclass(o) and issubclass(o, int):
            p(f"### `{name}`\n")
            p(fenced(inspect.getdoc(o)))
            p("Members: " + ", ".join(f"`{m.name}` = {m.value}" for m in o) + "\n")
            continue
        p(f"### `{name}{sig(o)}`\n")
        p(fenced(inspect.getdoc(o) or ""))
        if inspect.isclass(o):
            for mname, m in sorted(vars(o).items()):
                if mname.startswith("_"): continue
                if isinstance(m, property):
                    d = inspect.getdoc(m) or ""
                    p(f"- `{name}.{mname}` (property): {d.splitlines()[0] if d else ''}")
                elif inspect.isfunction(m) or isinstance(m, classmethod):
                    f = m.__func__ if isinstance(m, classmethod) else m
                    d = (inspect.getdoc(f) or "").splitlines()
                    p(f"- `{name}.{mname}{sig(f)}`: {d[0] if d else ''}")
            p("")
p("## Errors\n")
p("One table maps errno values to exceptions (`hvfilter.errors.ERRNO_TABLE`); opening the Xen backend has its own (`OPEN_ERRNO_TABLE`). `HvfilterError` is the base class and is never raised itself. Every exception has `.errno`, `.op` and `.domain`, and its message names the operation, the domain and the remedy.\n")
p("| errno | exception | meaning |\n|---|---|---|")
for e, cls in sorted(errors.ERRNO_TABLE.items(), key=lambda x: E.errorcode[x[0]]):
    p(f"| {E.errorcode[e]} | `{cls.__name__}` | {(cls.__doc__ or '').splitlines()[0]} |")
p("\nOpening the xen backend:\n\n| errno | exception | meaning |\n|---|---|---|")
for e, cls in sorted(errors.OPEN_ERRNO_TABLE.items(), key=lambda x: E.errorcode[x[0]]):
    p(f"| {E.errorcode[e]} | `{cls.__name__}` | {errors._OPEN_WHAT[e]} |")
p("\nAlso: `InvalidRuleError` and `LimitExceededError` from `compile()` (with `.rule` and `.cond`), `UnsupportedRuleError` (a kind the CPU cannot raise), `NotInstalledError` (an installation that was uninstalled or replaced), `ClosedError` (use after `close()`), `UnexpectedError` (an errno the header does not document). Exceptions raised by your callbacks are re-raised unchanged.\n")
(Path(__file__).resolve().parent / "api.md").write_text("\n".join(out))
