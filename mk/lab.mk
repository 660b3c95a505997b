# The lab: Xen + a Debian dom0 + the test guest under QEMU TCG (docs/lab.md).
#
#   make lab [XEN_VARIANT=plain|patched]   build/cache everything the lab boots
#   make lab-run SCENARIO="a b" [XEN_VARIANT=...]   one boot, those scenarios
#   make lab-test [XEN_VARIANT=...]        make lab + host pytest (-m lab) on
#                                          the scenarios' JSON results
#   make lab-demo                          `hvfilter demo` on the patched Xen
#                                          against the test guest (scenario demo)
#
# Not part of `make test`: tests/lab only run with `-m lab` (tests/lab/conftest.py).

APT_PACKAGES += qemu-system-x86 debootstrap cpio bison flex dpkg-dev libxen-dev patch \
                gcc binutils make gzip python3

XEN_VARIANT ?= plain
SCENARIO ?= toolstack libvmi_basics cr3_libvmi hvfilter_binding
# The project's virtual environment once `make deps` made it (pip download,
# pip wheel and pytest run there), else the machine's python3.
LAB_PY = $(if $(wildcard .venv/bin/python),$(abspath .venv/bin/python),python3)

.PHONY: lab lab-run lab-test lab-clean lab-demo
lab:
	PYTHON=$(LAB_PY) lab/build $(XEN_VARIANT)

lab-run: lab
	lab/run --variant $(XEN_VARIANT) $(SCENARIO)

lab-test: lab
	@$(LAB_PY) -c 'import pytest' 2>/dev/null || $(LAB_PY) -m pip install -q pytest
	XEN_VARIANT=$(XEN_VARIANT) $(LAB_PY) -m pytest -m lab -v -s -p no:cacheprovider tests/lab

# The demo's output appears as dom0's "[hvlab] demo| ..." lines.
lab-demo:
	PYTHON=$(LAB_PY) lab/build patched
	lab/run --variant patched demo

lab-clean:
	rm -rf build/lab build/xen-plain
