# Shared helpers for the lab build scripts (sourced, not executed).
#
# Paths are derived from this file's location so the lab works from any
# checkout; everything slow is cached under build/lab (git-ignored).

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP_DIR=$(cd "$LAB_DIR/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$TOP_DIR/build}
LAB_BUILD=${LAB_BUILD:-$BUILD_DIR/lab}

# The Xen source package pinned to bookworm's version: it matches the
# toolstack (xen-utils-4.17) that debootstrap installs in dom0.  The security
# pocket's newer source answers 404 on this mirror.
XEN_SRC_VERSION=4.17.5+72-g01140da4e8-1
SUITE=bookworm

log() { printf '[lab %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[lab %s] ERROR: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; exit 1; }

# stage_begin NAME / stage_end: print how long a stage took.
stage_begin() { STAGE_NAME=$1; STAGE_T0=$(date +%s.%N); log "stage '$STAGE_NAME' ..."; }
stage_end() {
    local t; t=$(awk -v a="$STAGE_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    log "stage '$STAGE_NAME' done in ${t} s${1:+ ($1)}"
}

# Print the URIs of the machine's own Debian apt source for the main archive
# (not -security/-updates).  Read at run time from the deb822 file or the
# one-line sources.list, so no mirror name is ever written into the repo.
apt_mirror() {
    local f uri=
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/)  { types = $i }
                    if ($i ~ /^URIs:/)   { uris = $i;   sub(/^URIs:[ \t]*/, "", uris) }
                    if ($i ~ /^Suites:/) { suites = $i }
                }
                if (types ~ /[ \t]deb([ \t]|$)/ && (" " suites " ") ~ ("[ \t]" suite "[ \t]")) {
                    split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$f")
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk -v suite="$SUITE" '$1 == "deb" && $0 !~ /\[/ && $3 == suite { print $2; exit }
                                     $1 == "deb" && $0 ~ /\]/ { for (i = 2; i <= NF; i++) if ($i ~ /\]$/) break;
                                                                 if ($(i + 2) == suite) { print $(i + 1); exit } }' \
              /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "cannot find a 'deb ... $SUITE' entry in the machine's apt sources"
    printf '%s\n' "${uri%/}"
}

# Make sure apt knows a deb-src twin of every machine apt source, then update
# the package lists once.  The twin is written next to the machine's own
# sources at run time (it names the same URIs, read from those files).
ensure_deb_src() {
    local out=/etc/apt/sources.list.d/hvfilter-lab-src.sources f
    # Nothing to do when apt already knows the pinned source (a deb-src entry
    # exists, e.g. the one xen/build.sh writes).
    if apt-get source --print-uris -q "xen=$XEN_SRC_VERSION" >/dev/null 2>&1; then
        return 0
    fi
    if [ ! -f "$out" ]; then
        log "adding a deb-src twin of the machine's apt sources ($out)"
        : > "$out.tmp"
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            [ "$f" = "$out" ] && continue
            # Copy each stanza whose Types include deb, as Types: deb-src.
            awk 'BEGIN { RS = ""; FS = "\n"; ORS = "\n\n" }
                 /(^|\n)Types:[^\n]*[ \t]deb([ \t]|\n|$)/ {
                     s = ""
                     for (i = 1; i <= NF; i++) {
                         if ($i ~ /^#/) continue
                         if ($i ~ /^Types:/) $i = "Types: deb-src"
                         s = s $i "\n"
                     }
                     printf "%s\n", s
                 }' "$f" >> "$out.tmp"
        done
        if [ -f /etc/apt/sources.list ]; then
            awk '$1 == "deb" { $1 = "deb-src"; print }' /etc/apt/sources.list > "$out.list.tmp"
            if [ -s "$out.list.tmp" ]; then mv "$out.list.tmp" "${out%.sources}.list"; else rm -f "$out.list.tmp"; fi
        fi
        mv "$out.tmp" "$out"
        rm -f "$LAB_BUILD/.apt-updated"
    fi
    if [ ! -f "$LAB_BUILD/.apt-updated" ]; then
        log "apt-get update"
        apt-get update -q >&2 || die "apt-get update failed (is the Debian registry reachable?)"
        mkdir -p "$LAB_BUILD" && touch "$LAB_BUILD/.apt-updated"
    fi
}

need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (apt-get, debootstrap, chroot)"; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "missing command '$1' (run 'make deps'; the package is listed in mk/lab.mk)"; }
