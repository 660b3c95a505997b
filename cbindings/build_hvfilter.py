"""cffi builder for ``hvfilter._native`` (out-of-line, API mode).

Referenced from ``setup.py`` through ``cffi_modules``.  The extension holds:

* the shim ``cbindings/hvf_shim.c`` (xen and sim backends, workload model);
* the hypervisor's rule evaluator ``xen/common/hvfilter_eval.c``, compiled
  unchanged, so that the simulator and ``compile()``'s final check run the
  very code that Xen runs.

The declarations are read from ``cbindings/decl/*.h`` in file-name order.
They mirror ``xen/include/public/hvfilter.h`` exactly; cffi's API mode makes
the C compiler check every structure size, field offset and constant against
the real header at build time.

Xen's public headers are included with quoted includes only
(``-iquote``), so that ``/usr/include/xen/errno.h`` and friends never shadow
glibc's headers of the same name.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
XEN_PUBLIC = ROOT / "xen" / "include" / "public"
XEN_COMMON = ROOT / "xen" / "common"
# Debian's libxen-dev puts Xen's public headers here and xencall.h one up.
SYSTEM_XEN = Path(os.environ.get("HVF_XEN_INCLUDE", "/usr/include/xen"))


def _rel(p: Path) -> str:
    """Sources relative to the project root, as setuptools wants them
    (absolute when run by hand: ffi.compile() changes directory)."""
    if __name__ == "__main__":
        return str(p)
    return os.path.relpath(p, os.getcwd())


def _cdef_text() -> str:
    parts = []
    for f in sorted((HERE / "decl").glob("*.h")):
        parts.append(f"/* {f.name} */\n" + f.read_text())
    return "\n".join(parts)


ffibuilder = FFI()
ffibuilder.cdef(_cdef_text())
ffibuilder.set_source(
    "hvfilter._native",
    '#include "hvf_shim.h"\n',
    sources=[_rel(HERE / "hvf_shim.c"), _rel(XEN_COMMON / "hvfilter_eval.c")],
    include_dirs=[str(HERE)],
    define_macros=[("__XEN_TOOLS__", None)],
    extra_compile_args=[
        "-iquote", str(XEN_COMMON),
        "-iquote", str(XEN_PUBLIC),
        "-iquote", str(SYSTEM_XEN),
        "-std=gnu11",
        "-Wall",
        "-Wno-unused-parameter",
    ],
    libraries=["dl"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT / "build" / "cffi"), verbose=True)
