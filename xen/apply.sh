#!/usr/bin/env bash
# Apply hvfilter to an unpacked Xen 4.17 source tree.
#
#   xen/apply.sh SRC
#
# SRC is the top of the tree `apt-get source xen` unpacks (it holds xen/Makefile).
# The script
#   1. copies hvfilter's new files (the public ABI header, the evaluator, the
#      domctl handler and the private header) to the same places in SRC, and
#   2. applies xen/patches/*.patch in order with `patch -p1 --forward --batch`.
# It stops at the first patch that does not apply, naming it, and refuses to
# run twice on the same tree (a marker file records that SRC is patched).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { printf 'xen/apply.sh: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf 'xen/apply.sh: %s\n' "$*" >&2; }

[ $# -eq 1 ] || die "usage: xen/apply.sh SRC (the unpacked Xen source tree)"
src=$1
[ -f "$src/xen/Makefile" ] && [ -f "$src/xen/common/domctl.c" ] \
    || die "$src does not look like a Xen source tree (no xen/Makefile, xen/common/domctl.c)"
command -v patch >/dev/null 2>&1 || die "the 'patch' command is missing (Debian package: patch)"

marker=$src/.hvfilter-applied
[ ! -e "$marker" ] || die "$src is already patched (remove the tree and unpack it again)"

# The new files, relative to this directory and to SRC's xen/ alike.
files=(
    include/public/hvfilter.h
    include/xen/hvfilter.h
    common/hvfilter_eval.h
    common/hvfilter_eval.c
    common/hvfilter.c
)
for f in "${files[@]}"; do
    [ -f "$here/$f" ] || die "missing $here/$f"
    [ ! -e "$src/xen/$f" ] || die "$src/xen/$f already exists: not a pristine tree"
done

patches=("$here"/patches/*.patch)
[ -f "${patches[0]}" ] || die "no patches in $here/patches"

for f in "${files[@]}"; do
    install -m 0644 "$here/$f" "$src/xen/$f"
done
log "copied ${#files[@]} new files into $src/xen"

# Each patch is dry-run first, so that one that does not apply is reported
# without leaving half of its hunks in the tree.
for p in "${patches[@]}"; do
    name=$(basename "$p")
    if ! out=$(patch -d "$src" -p1 --forward --batch --dry-run < "$p" 2>&1); then
        printf '%s\n' "$out" >&2
        die "patch $name does not apply to $src (nothing of it was applied; earlier patches were)"
    fi
    patch -d "$src" -p1 --forward --batch --no-backup-if-mismatch --quiet < "$p" \
        || die "patch $name failed while applying (the tree is now half-patched)"
    log "applied $name"
done

{
    echo "hvfilter applied by xen/apply.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    for p in "${patches[@]}"; do basename "$p"; done
} > "$marker"
log "done: $src is patched (${#patches[@]} patches)"
