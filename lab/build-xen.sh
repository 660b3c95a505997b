#!/usr/bin/env bash
# Build the Xen hypervisor from Debian's own source package.
#
#   lab/build-xen.sh plain|patched
#
# The pristine source (apt-get source, Debian patches applied) is unpacked
# once into build/xen-src (shared with xen/build.sh); each variant builds in
# its own copy, build/xen-<variant>/, so switching variants never rebuilds
# from scratch.  For 'patched', the project's own xen/build.sh (make xen) is
# the authority when it exists: it copies, runs xen/apply.sh and builds into
# the same build/xen-patched.  Without it, xen/apply.sh <tree> is applied here.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

variant=${1:-plain}
case $variant in plain|patched) ;; *) die "XEN_VARIANT must be 'plain' or 'patched', not '$variant'";; esac

need_cmd dpkg-source
need_cmd bison
need_cmd flex

src_root=$BUILD_DIR/xen-src
out=$BUILD_DIR/xen-$variant

if [ "$variant" = patched ]; then
    [ -f "$TOP_DIR/xen/apply.sh" ] \
        || die "XEN_VARIANT=patched needs xen/apply.sh (the Xen-patch work), which does not exist yet"
    if [ -f "$TOP_DIR/xen/build.sh" ]; then
        stage_begin "xen-patched via xen/build.sh"
        bash "$TOP_DIR/xen/build.sh" || die "xen/build.sh (the patched hypervisor build) failed"
        stage_end "$out/xen/xen"
        exit 0
    fi
fi

# 1. The pristine source.
if [ ! -f "$src_root/.stamp" ]; then
    stage_begin "xen source (apt-get source xen=$XEN_SRC_VERSION)"
    need_root "getting the Xen source"
    ensure_deb_src
    rm -rf "$src_root"; mkdir -p "$src_root"
    (cd "$src_root" && apt-get source -q "xen=$XEN_SRC_VERSION" >&2) \
        || die "apt-get source xen=$XEN_SRC_VERSION failed (no deb-src entry, or version gone from the mirror?)"
    tree=$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'xen-*' | head -n1)
    [ -n "$tree" ] && [ -f "$tree/xen/Makefile" ] || die "apt-get source did not produce a xen-*/xen/Makefile tree"
    ln -sfn "$(basename "$tree")" "$src_root/tree"
    touch "$src_root/.stamp"
    stage_end
fi

# 2. The variant's copy (re-made when the pristine source or, for 'patched',
# the project's Xen side changed since the last copy).
apply=$TOP_DIR/xen/apply.sh
recopy=
if [ ! -f "$out/.copied" ] || [ "$src_root/.stamp" -nt "$out/.copied" ]; then
    recopy=1
elif [ "$variant" = patched ] && [ -n "$(find "$TOP_DIR/xen" -newer "$out/.copied" -type f -not -path '*/tests/out/*' -print -quit)" ]; then
    recopy=1
fi
if [ -n "$recopy" ]; then
    stage_begin "xen-$variant: copy pristine source"
    rm -rf "$out"; mkdir -p "$out"
    cp -a "$src_root/tree/." "$out/"
    stage_end
    if [ "$variant" = patched ]; then
        stage_begin "xen-$variant: xen/apply.sh"
        bash "$apply" "$out" >&2 || die "xen/apply.sh failed on $out"
        stage_end
    fi
    touch "$out/.copied"
    rm -f "$out/.built"
fi

# 3. Build.  make alone is incremental but takes several seconds to find out
# that nothing changed; a stamp and a look for newer sources is instant.
if [ -f "$out/.built" ] && [ -f "$out/xen/xen" ] && [ -z "$(find "$out/xen" -newer "$out/.built" -type f \
        \( -name '*.[chS]' -o -name 'Makefile' -o -name 'Kconfig*' -o -name '*.mk' -o -name '.config' \) \
        -print -quit)" ]; then
    log "xen-$variant: up to date ($out/xen/xen)"
    exit 0
fi
stage_begin "xen-$variant: build hypervisor"
if [ ! -f "$out/xen/.config" ]; then
    make -s -C "$out/xen" defconfig >&2 || die "make -C xen defconfig failed"
fi
make -C "$out/xen" -j"${LAB_JOBS:-2}" > "$out/build.log" 2>&1 \
    || { tail -n 40 "$out/build.log" >&2; die "hypervisor build failed (log: $out/build.log)"; }
[ -f "$out/xen/xen" ] && [ -f "$out/xen/xen.gz" ] || die "build finished but $out/xen/xen or xen.gz is missing"
touch "$out/.built"
stage_end "$out/xen/xen"
