#!/usr/bin/env bash
# Packing a root into a gzip'd rootfs tarball, in one run on this machine:
#   GNU tar -czf (gzip -6, one core)   vs   berth mkimage --root TREE --tar FILE
# on the same 1 GiB tree: system libraries, binaries and docs copied from /usr
# (compressible, many files) topped up with random data (incompressible).
# berth packs with its deterministic parallel gzip on every core; the time is the
# whole mkimage run (recipe, snapshot of the tree, packing).
# Target: berth <= 0.8x tar's time at <= 1.02x its size. A third row packs with
# --level 6, for sites that would trade a little size for speed.
# Absolute numbers wander on a shared machine; the ratios are the result.
# Usage: bench/mkimage.sh [SIZE_MIB]   (default 1024), as root
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
BERTH=${BERTH:-$PWD/dist/berth}
if [ ! -x "$BERTH" ]; then
	# The machine's cargo lock keeps this build from racing another one.
	flock /tmp/berth-cargo.lock make static >&2
fi
for t in tar gzip python3; do
	command -v $t >/dev/null || { echo "missing $t: scripts/need.sh bench" >&2; exit 1; }
done
tar --version | head -1 | grep -q GNU || { echo "tar is not GNU tar" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "mkimage runs as root: run this as root" >&2; exit 1; }

W=$(mktemp -d /var/tmp/berth-bench-mkimage.XXXXXX)
trap 'rm -rf "$W"' EXIT

# --- the tree: 7/8 from /usr, 1/8 random --------------------------------------
mkdir -p "$W/tree/usr"
want_usr=$((SIZE_MIB * 7 / 8))
for d in lib/x86_64-linux-gnu bin share/doc share/locale share/man include lib/python3 sbin share; do
	have=$(du -sm "$W/tree" | cut -f1)
	[ "$have" -ge "$want_usr" ] && break
	[ -d "/usr/$d" ] || continue
	mkdir -p "$W/tree/usr/$(dirname "$d")"
	cp -a "/usr/$d" "$W/tree/usr/$(dirname "$d")/" 2>/dev/null || true
done
# trim back to the target, largest files of the last copy first
while [ "$(du -sm "$W/tree" | cut -f1)" -gt "$want_usr" ]; do
	f=$(find "$W/tree" -type f -size +256k -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
	[ -n "$f" ] || break
	rm -f "$f"
done
have=$(du -sm "$W/tree" | cut -f1)
if [ "$have" -lt "$SIZE_MIB" ]; then
	mkdir -p "$W/tree/var/data"
	head -c $(((SIZE_MIB - have) * 1024 * 1024)) /dev/urandom >"$W/tree/var/data/random.bin"
fi
TREE_MIB=$(du -sm "$W/tree" | cut -f1)
TREE_FILES=$(find "$W/tree" | wc -l)
# both tools read it from the page cache
find "$W/tree" -type f -exec cat {} + >/dev/null

printf 'name: bench\nepoch: 1490616000\n' >"$W/pack.yml"

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
ratio() { python3 -c "a,b=$1,$2; print(f'{a/b:.${3:-2}f}')"; }

sync; t0=$(now)
tar -C "$W/tree" -czf "$W/tar.tar.gz" .
t1=$(now); TAR_S=$(secs "$t0" "$t1"); TAR_B=$(stat -c %s "$W/tar.tar.gz")

sync; t0=$(now)
BERTH_ROOT="$W/store" "$BERTH" mkimage --root "$W/tree" --tar "$W/berth.tar.gz" "$W/pack.yml" >"$W/mkimage.out" 2>"$W/mkimage.err"
t1=$(now); B_S=$(secs "$t0" "$t1"); B_B=$(stat -c %s "$W/berth.tar.gz")

sync; t0=$(now)
BERTH_ROOT="$W/store" "$BERTH" mkimage --level 6 --root "$W/tree" --tar "$W/berth9.tar.gz" "$W/pack.yml" >/dev/null 2>&1
t1=$(now); B9_S=$(secs "$t0" "$t1"); B9_B=$(stat -c %s "$W/berth9.tar.gz")

# the same tree went in: same number of entries (tar adds the ./ entry)
n_tar=$(tar -tzf "$W/tar.tar.gz" | grep -vc '^\./$')
n_berth=$(tar -tzf "$W/berth.tar.gz" | wc -l)
[ "$n_tar" = "$n_berth" ] || { echo "entry counts differ: tar $n_tar, berth $n_berth" >&2; exit 1; }

echo "tree: ${TREE_MIB} MiB, ${TREE_FILES} entries; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(tar --version | head -1), gzip -6"
printf '%-32s %10s %14s\n' "tool" "seconds" "bytes"
printf '%-32s %10s %14s\n' "tar -czf (GNU tar + gzip -6)" "$TAR_S" "$TAR_B"
printf '%-32s %10s %14s\n' "berth mkimage --root --tar" "$B_S" "$B_B"
printf '%-32s %10s %14s\n' "berth mkimage --level 6" "$B9_S" "$B9_B"
echo "ratios berth/tar: time $(ratio "$B_S" "$TAR_S") (target <= 0.80), size $(ratio "$B_B" "$TAR_B" 3) (target <= 1.02)"
echo "ratios berth --level 6/tar: time $(ratio "$B9_S" "$TAR_S"), size $(ratio "$B9_B" "$TAR_B" 3)"
grep '^tar ' "$W/mkimage.out" | sed 's/^/mkimage: /'
