#!/usr/bin/env bash
# Fetch Debian's dom0 kernel without installing it on the host:
# apt-get download linux-image-amd64 and the versioned image package it
# depends on, dpkg -x into build/lab/kernel, keep boot/vmlinuz-* and the
# modules (the Xen dom0 drivers are modules; build-rootfs.sh copies them).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

kdir=$LAB_BUILD/kernel
if [ -f "$kdir/.stamp" ]; then
    log "dom0 kernel: cached ($(cat "$kdir/.stamp"))"
    exit 0
fi
stage_begin "dom0 kernel (apt-get download linux-image-amd64)"
need_cmd apt-get
need_cmd dpkg-deb
rm -rf "$kdir"; mkdir -p "$kdir/debs" "$kdir/x"
cd "$kdir/debs"
# The metapackage names the versioned image package in its Depends.
apt-get download -q linux-image-amd64 >&2 \
    || { ensure_deb_src; apt-get download -q linux-image-amd64 >&2; } \
    || die "apt-get download linux-image-amd64 failed"
meta=$(ls linux-image-amd64_*.deb)
img=$(dpkg-deb -f "$meta" Depends | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1)
[ -n "$img" ] || die "cannot find the versioned image package in $meta's Depends"
apt-get download -q "$img" >&2 || die "apt-get download $img failed"
dpkg -x "$img"_*.deb "$kdir/x"
vmlinuz=$(ls "$kdir"/x/boot/vmlinuz-* | head -n1)
[ -f "$vmlinuz" ] || die "no boot/vmlinuz-* in $img"
kver=${vmlinuz##*/vmlinuz-}
cp "$vmlinuz" "$kdir/vmlinuz"
echo "$kver" > "$kdir/version"
[ -d "$kdir/x/lib/modules/$kver" ] || die "no lib/modules/$kver in $img"
rm -rf "$kdir/debs"
echo "$kver" > "$kdir/.stamp"
stage_end "$kver"
