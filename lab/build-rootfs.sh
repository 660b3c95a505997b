#!/usr/bin/env bash
# Build dom0's base root filesystem: build/lab/base.cpio.gz.
#
# 1. debootstrap (minbase + the packages below) into build/lab/rootfs,
#    cached: re-run only when the package list changes (55-75 s).
# 2. Add the dom0 kernel's Xen modules (depmod inside the chroot) and the
#    LibVMI Python wheel, strip docs/man/locales, pack as gzip cpio (~3 s).
# Things that change often (the project, scenarios, test guest) go into the
# small overlay archive instead (build-overlay.sh), never in here.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# dom0 userspace.  xen-utils-4.17 is bookworm's 4.17.5 toolstack, matching the
# pinned hypervisor source.  libxen-dev provides the unversioned libxenctrl.so
# and libxenstore.so that the LibVMI wheel dlopens; libglib2.0-0 and
# python3-future are the wheel's other run-time needs.  python3-ply is
# listed because debootstrap does not resolve the virtual python3-ply-lex-3.10
# that python3-pycparser (for cffi) depends on.
PACKAGES=xen-utils-4.17,xenstore-utils,python3,python3-cffi,python3-ply,python3-pytest,python3-future,libxen-dev,libglib2.0-0,kmod,busybox,procps
LIBVMI_VERSION=3.7.1

root=$LAB_BUILD/rootfs
kdir=$LAB_BUILD/kernel
wheels=$LAB_BUILD/wheels
out=$LAB_BUILD/base.cpio.gz

need_root "building the dom0 root filesystem"
need_cmd debootstrap
need_cmd cpio
[ -f "$kdir/.stamp" ] || die "dom0 kernel missing: run lab/build-kernel.sh first"
kver=$(cat "$kdir/version")

# 1. debootstrap.
want="$SUITE $PACKAGES"
if [ ! -f "$root/.stamp" ] || [ "$(cat "$root/.stamp")" != "$want" ]; then
    stage_begin "dom0 rootfs: debootstrap $SUITE (minbase)"
    mirror=$(apt_mirror)
    rm -rf "$root" "$out"
    mkdir -p "$LAB_BUILD"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" \
            > "$LAB_BUILD/debootstrap.log" 2>&1; then
        grep -E '^(E|W):|Couldn|not found|Failure' "$LAB_BUILD/debootstrap.log" | tail -n 20 >&2 || true
        tail -n 20 "$LAB_BUILD/debootstrap.log" >&2
        [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 20 "$root/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (a package in '$PACKAGES' missing from $SUITE, or the registry unreachable); log: $LAB_BUILD/debootstrap.log"
    fi
    echo "$want" > "$root/.stamp"
    stage_end
fi

# The LibVMI wheel from PyPI (a manylinux_2_28 cp311 build: bookworm has
# glibc 2.36 and Python 3.11).
whl=$(ls "$wheels"/libvmi-"$LIBVMI_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$whl" ]; then
    stage_begin "libvmi $LIBVMI_VERSION wheel (pip download)"
    mkdir -p "$wheels"
    "${PYTHON:-python3}" -m pip download -q "libvmi==$LIBVMI_VERSION" --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$wheels" >&2 \
        || die "pip download libvmi==$LIBVMI_VERSION failed"
    whl=$(ls "$wheels"/libvmi-"$LIBVMI_VERSION"-*.whl | head -n1)
    stage_end "$(basename "$whl")"
fi

# 2. Pack (only when an input is newer than the archive).
if [ -f "$out" ] && [ "$out" -nt "$root/.stamp" ] && [ "$out" -nt "$kdir/.stamp" ] \
        && [ "$out" -nt "$whl" ] && [ "$out" -nt "$0" ]; then
    log "dom0 base rootfs: cached ($(du -h "$out" | cut -f1))"
    exit 0
fi
stage_begin "dom0 rootfs: modules, libvmi, strip, pack"
# Kernel modules: the Xen dom0 drivers (xen-evtchn, xen-privcmd, xen-gntdev,
# xen-gntalloc, xenfs, ...) are all under drivers/xen.
mdst=$root/lib/modules/$kver
rm -rf "$root"/lib/modules/*
mkdir -p "$mdst/kernel/drivers"
cp -a "$kdir/x/lib/modules/$kver/kernel/drivers/xen" "$mdst/kernel/drivers/"
for f in modules.order modules.builtin modules.builtin.modinfo; do
    [ -f "$kdir/x/lib/modules/$kver/$f" ] && cp "$kdir/x/lib/modules/$kver/$f" "$mdst/"
done
chroot "$root" /sbin/depmod "$kver" || die "depmod $kver in the dom0 chroot failed"
for m in xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xenfs; do
    grep -q "/$m.ko" "$mdst/modules.dep" || die "module $m missing from the dom0 kernel package"
done

# LibVMI: unpack the wheel where Debian's python3 looks for local packages.
site=$root/usr/local/lib/python3.11/dist-packages
rm -rf "$site/libvmi" "$site/libvmi.libs" "$site"/libvmi-*.dist-info "$site"/_libvmi*.so
mkdir -p "$site"
python3 -m zipfile -e "$whl" "$site"
# LibVMI's Xen driver dlopens the unversioned names; libxen-dev has them,
# make sure they resolve.
for l in libxenctrl libxenstore libxenforeignmemory libxenevtchn libxentoollog libxencall; do
    ls "$root"/usr/lib/x86_64-linux-gnu/$l.so >/dev/null 2>&1 \
        || die "$l.so missing in dom0 (libxen-dev not installed?)"
done

# Strip what dom0 never reads.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/usr/share/locale/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/var/lib/apt/lists/* "$root"/usr/share/i18n/* 2>/dev/null || true
(cd "$root" && find . -path ./debootstrap -prune -o -path ./.stamp -prune -o -print \
    | cpio -o -H newc --quiet | gzip -1) > "$out.tmp"
mv "$out.tmp" "$out"
stage_end "$(du -h "$out" | cut -f1)"
