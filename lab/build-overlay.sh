#!/usr/bin/env bash
# Build the small, often-changing overlay archive and the final initramfs.
#
#   overlay.cpio.gz: /init (lab/dom0/init), /opt/hvlab/{dom0,scenarios,tests,examples,guest}
#                    and the project's own Python package (wheel contents)
#   rootfs.cpio.gz:  base.cpio.gz + overlay.cpio.gz concatenated (Linux
#                    unpacks concatenated gzip cpio archives in order)
#
# Cheap (a second or two plus the wheel build), so it runs on every `make lab`.
# HVLAB_GUEST_ELF=path overrides the guest (for trying a guest built elsewhere).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

base=$LAB_BUILD/base.cpio.gz
ov=$LAB_BUILD/overlay
[ -f "$base" ] || die "base rootfs missing: run lab/build-rootfs.sh first"

# The test guest.
stage_begin "test guest"
gdir=$LAB_BUILD/guest
if [ -n "${HVLAB_GUEST_ELF:-}" ]; then
    guest=$HVLAB_GUEST_ELF
    [ -f "$guest" ] || die "HVLAB_GUEST_ELF=$guest does not exist"
elif [ -f "$LAB_DIR/guest/Makefile" ]; then
    mkdir -p "$gdir"
    make -s -C "$LAB_DIR/guest" O="$gdir" >&2 || die "test guest build failed (make -C lab/guest O=$gdir)"
    guest=$gdir/guest.elf
    [ -f "$guest" ] || die "make -C lab/guest did not produce $guest"
else
    die "the test guest (lab/guest/Makefile) does not exist yet; set HVLAB_GUEST_ELF=path to use another PVH kernel"
fi
stage_end "$guest"

stage_begin "overlay (project, scenarios, guest)"
rm -rf "$ov"; mkdir -p "$ov/opt/hvlab/guest" "$ov/usr/local/lib/python3.11/dist-packages"
install -m 0755 "$LAB_DIR/dom0/init" "$ov/init"
cp -a "$LAB_DIR/dom0" "$LAB_DIR/scenarios" "$ov/opt/hvlab/"
cp "$guest" "$ov/opt/hvlab/guest/guest.elf"
for f in "$LAB_DIR"/guest/*.py "$LAB_DIR"/guest/*.h; do
    [ -f "$f" ] && cp "$f" "$ov/opt/hvlab/guest/"
done
[ -d "$TOP_DIR/tests" ] && cp -a "$TOP_DIR/tests" "$ov/opt/hvlab/tests"
[ -d "$TOP_DIR/examples" ] && cp -a "$TOP_DIR/examples" "$ov/opt/hvlab/examples"
find "$ov" -name __pycache__ -prune -exec rm -rf {} +

# The project's Python package, once it exists: a wheel built on the host
# (Python 3.11 like bookworm's), unpacked where dom0's python3 finds it.
if [ -f "$TOP_DIR/pyproject.toml" ]; then
    wdir=$LAB_BUILD/wheel-hvfilter
    newest=$(find "$TOP_DIR/pyproject.toml" "$TOP_DIR/src" "$TOP_DIR/cbindings" "$TOP_DIR/xen/include" \
                  $( [ -f "$TOP_DIR/setup.py" ] && echo "$TOP_DIR/setup.py" ) \
                  -type f -newer "$wdir/.stamp" -print -quit 2>/dev/null || true)
    if [ ! -f "$wdir/.stamp" ] || [ -n "$newest" ]; then
        rm -rf "$wdir"; mkdir -p "$wdir"
        "${PYTHON:-python3}" -m pip wheel -q --no-deps "$TOP_DIR" -w "$wdir" > "$wdir/build.log" 2>&1 \
            || { tail -n 30 "$wdir/build.log" >&2; die "building the project's wheel failed (pip wheel --no-deps .)"; }
        # Its run-time dependencies, except cffi (Debian's python3-cffi in the
        # base must match the system's _cffi_backend): bookworm's own attrs and
        # typing-extensions are older than the project asks for, so the
        # wheels come from PyPI for dom0's Python (3.11).
        reqs=$("${PYTHON:-python3}" - "$wdir"/*.whl <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
for line in z.read(meta).decode().splitlines():
    if line.startswith("Requires-Dist:"):
        req = line.split(":", 1)[1].strip()
        if "extra ==" in req or req.lower().startswith("cffi"):
            continue
        print(req.split(";")[0].strip())
PY
)
        if [ -n "$reqs" ]; then
            # shellcheck disable=SC2086
            "${PYTHON:-python3}" -m pip download -q --only-binary=:all: --python-version 3.11 \
                --implementation cp --abi cp311 --abi abi3 --abi none \
                --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
                -d "$wdir/deps" $reqs >> "$wdir/build.log" 2>&1 \
                || { tail -n 20 "$wdir/build.log" >&2; die "pip download of the project's dependencies ($reqs) failed"; }
        fi
        touch "$wdir/.stamp"
    fi
    for w in "$wdir"/*.whl "$wdir"/deps/*.whl; do
        [ -f "$w" ] || continue
        python3 -m zipfile -e "$w" "$ov/usr/local/lib/python3.11/dist-packages"
        log "wheel in dom0: $(basename "$w")"
    done
else
    log "note: no pyproject.toml yet, the project's Python package is not in dom0"
fi

(cd "$ov" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1) > "$LAB_BUILD/overlay.cpio.gz.tmp"
mv "$LAB_BUILD/overlay.cpio.gz.tmp" "$LAB_BUILD/overlay.cpio.gz"
cat "$base" "$LAB_BUILD/overlay.cpio.gz" > "$LAB_BUILD/rootfs.cpio.gz.tmp"
mv "$LAB_BUILD/rootfs.cpio.gz.tmp" "$LAB_BUILD/rootfs.cpio.gz"
stage_end "overlay $(du -h "$LAB_BUILD/overlay.cpio.gz" | cut -f1), initramfs $(du -h "$LAB_BUILD/rootfs.cpio.gz" | cut -f1)"
