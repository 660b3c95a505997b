# The hypervisor side: Xen 4.17 from Debian's source package plus hvfilter.
#
#   make xen       fetch (once), copy, patch (xen/apply.sh) and build; outputs
#                  build/xen-patched/xen/xen and xen.gz (see xen/build.sh)
#   make xen-clean remove the patched copy (the fetched source stays cached)
#
# XEN_SRC_VERSION pins bookworm's source, which matches dom0's stock
# toolstack; XEN_JOBS sets make's parallelism (default 2).

APT_PACKAGES += bison flex dpkg-dev patch python3 gcc make

XEN_SRC_VERSION ?= 4.17.5+72-g01140da4e8-1
XEN_JOBS ?= 2

.PHONY: xen xen-clean
xen:
	XEN_SRC_VERSION=$(XEN_SRC_VERSION) XEN_JOBS=$(XEN_JOBS) xen/build.sh

xen-clean:
	rm -rf build/xen-patched
