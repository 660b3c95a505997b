#!/usr/bin/env bash
# Build the hvfilter-patched Xen hypervisor from Debian's own source package.
#
#   xen/build.sh            (what `make xen` runs)
#
# Stages, each timed:
#   1. source   `apt-get source xen=$XEN_SRC_VERSION` into build/xen-src, once
#               (adds a deb-src twin of the machine's apt sources if apt has
#               none; the twin's URIs are read from those sources at run time)
#   2. copy     a fresh copy of the pristine tree in build/xen-patched, made
#               again whenever the pristine source or anything under xen/
#               changed since the last copy
#   3. apply    xen/apply.sh build/xen-patched
#   4. config   make -C xen defconfig, CONFIG_HVFILTER=y checked
#   5. build    make -C xen -j$XEN_JOBS (log: build/xen-patched/build.log)
# Outputs: build/xen-patched/xen/xen (the multiboot ELF that QEMU's -kernel
# boots) and build/xen-patched/xen/xen.gz (for /boot).  The layout is the one
# lab/build-xen.sh uses for XEN_VARIANT=patched, so both can share the copy.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
build=${BUILD_DIR:-$top/build}

XEN_SRC_VERSION=${XEN_SRC_VERSION:-4.17.5+72-g01140da4e8-1}
XEN_JOBS=${XEN_JOBS:-2}
src_root=$build/xen-src
out=$build/xen-patched

t_start=$(date +%s)
log() { printf '[xen %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[xen %s] ERROR: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; exit 1; }
stage_begin() { stage=$1; t0=$(date +%s.%N); log "stage '$stage' ..."; }
stage_end() {
    log "stage '$stage' done in $(awk -v a="$t0" -v b="$(date +%s.%N)" \
        'BEGIN { printf "%.1f", b - a }') s${1:+ ($1)}"
}
need_cmd() {
    command -v "$1" >/dev/null 2>&1 \
        || die "missing command '$1' (run 'make deps'; mk/xen.mk lists the packages)"
}

for c in apt-get dpkg-source patch bison flex make gcc python3; do need_cmd "$c"; done

# Write a deb-src twin of every deb stanza/line of the machine's apt sources.
# Nothing about the mirror is stored in the repository: it is read here.
add_deb_src() {
    local twin=/etc/apt/sources.list.d/hvfilter-xen-src.sources f
    [ "$(id -u)" = 0 ] || die "apt has no deb-src entry for xen; adding one needs root"
    log "adding a deb-src twin of the machine's apt sources ($twin)"
    : > "$twin.tmp"
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && [ "$f" != "$twin" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             /(^|\n)Types:[^\n]*[ \t]deb([ \t]|\n|$)/ {
                 for (i = 1; i <= NF; i++) {
                     if ($i ~ /^#/) continue
                     if ($i ~ /^Types:/) $i = "Types: deb-src"
                     print $i
                 }
                 print ""
             }' "$f" >> "$twin.tmp"
    done
    if [ -f /etc/apt/sources.list ]; then
        awk '$1 == "deb" { $1 = "deb-src"; print }' /etc/apt/sources.list \
            > "${twin%.sources}.list"
        [ -s "${twin%.sources}.list" ] || rm -f "${twin%.sources}.list"
    fi
    mv "$twin.tmp" "$twin"
    apt-get update -q >&2 || die "apt-get update failed"
}

# 1. The pristine source.
if [ ! -f "$src_root/.stamp" ]; then
    stage_begin "source (apt-get source xen=$XEN_SRC_VERSION)"
    if ! apt-get source --print-uris -q "xen=$XEN_SRC_VERSION" >/dev/null 2>&1; then
        add_deb_src
    fi
    rm -rf "$src_root"
    mkdir -p "$src_root"
    (cd "$src_root" && apt-get source -q "xen=$XEN_SRC_VERSION" >&2) \
        || die "apt-get source xen=$XEN_SRC_VERSION failed"
    tree=$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'xen-*' | head -n1)
    [ -n "$tree" ] && [ -f "$tree/xen/Makefile" ] \
        || die "apt-get source did not unpack a xen-*/xen/Makefile tree"
    ln -sfn "$(basename "$tree")" "$src_root/tree"
    touch "$src_root/.stamp"
    stage_end
fi

# 2-3. A fresh copy, patched.  The stamp name matches lab/build-xen.sh's.
if [ ! -f "$out/.copied" ] || [ "$src_root/.stamp" -nt "$out/.copied" ] ||
   [ -n "$(find "$here" -newer "$out/.copied" -type f \
           -not -path '*/tests/out/*' -print -quit)" ]; then
    stage_begin "copy pristine source to $out"
    rm -rf "$out"
    mkdir -p "$out"
    cp -a "$src_root/tree/." "$out/"
    stage_end

    stage_begin "apply (xen/apply.sh)"
    bash "$here/apply.sh" "$out"
    stage_end
    touch "$out/.copied"
fi

# 4. Configuration: Xen's defaults, which include CONFIG_HVFILTER=y.
stage_begin "config (defconfig)"
if [ ! -f "$out/xen/.config" ]; then
    make -s -C "$out/xen" defconfig >&2 || die "make -C xen defconfig failed"
fi
grep -q '^CONFIG_HVFILTER=y$' "$out/xen/.config" \
    || die "CONFIG_HVFILTER is not enabled in $out/xen/.config"
stage_end

# 5. The hypervisor (make keeps this incremental within one copy).
stage_begin "build (make -C xen -j$XEN_JOBS)"
if ! make -C "$out/xen" -j"$XEN_JOBS" > "$out/build.log" 2>&1; then
    tail -n 40 "$out/build.log" >&2
    die "hypervisor build failed (log: $out/build.log)"
fi
[ -f "$out/xen/xen" ] && [ -f "$out/xen/xen.gz" ] \
    || die "the build finished without $out/xen/xen and xen.gz"
if grep -q 'warning:' "$out/build.log"; then
    grep 'warning:' "$out/build.log" >&2
    die "the build printed warnings (log: $out/build.log)"
fi
stage_end "$out/xen/xen"

log "make xen done in $(( $(date +%s) - t_start )) s:"
log "  $out/xen/xen     (QEMU -kernel)"
log "  $out/xen/xen.gz  (copy to /boot, see docs/xen.md)"
