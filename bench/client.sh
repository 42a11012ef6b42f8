#!/usr/bin/env bash
# berth's client applets against the tools they replace, in one run on this machine:
#   - push and pull of a ~512 MiB image to/from registryd (TLS + basic auth):
#     `berth push` / `berth pull` vs `skopeo copy` of the same image
#   - import of the same tree: `tar | berth import -` vs `tar | gzip` (docker import
#     needs a running docker engine, which this machine does not have)
# Each tool gets its own registryd instance and storage, so nobody finds blobs the
# other uploaded. Absolute numbers wander on a shared machine; the ratios matter.
# Usage: bench/client.sh [SIZE_MIB]   (default 512)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-512}
BERTH=${BERTH:-$PWD/dist/berth}
[ -x "$BERTH" ] || { echo "build first: make static" >&2; exit 1; }
for t in skopeo curl openssl gzip tar python3; do
	command -v $t >/dev/null || { echo "missing $t: scripts/need.sh bench" >&2; exit 1; }
done

. bench/lib.sh
make_pki
cd "$W"
USER=bench PASS=bench-pass-1
echo "$PASS" | "$BERTH" htpasswd -c -i htpasswd "$USER" 2>/dev/null

start_registry() { # start_registry NAME: sets PORT (no subshell, so cleanup sees the pid)
	local p; p=$(port)
	cat >"$1.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $W/$1-data}, delete: {enabled: true}}
http: {addr: "127.0.0.1:$p", tls: {certificate: $W/server.crt, key: $W/server.key}}
auth: {htpasswd: {realm: basic-realm, path: $W/htpasswd}}
EOF
	"$BERTH" registryd "$1.yml" >"$1.log" 2>&1 &
	PIDS+=($!)
	wait_https "$p"
	PORT=$p
}
start_registry for-berth; PB=$PORT
start_registry for-skopeo; PS=$PORT

# client side: a private store, docker config and certs.d for each registry
export BERTH_ROOT=$W/store DOCKER_CONFIG=$W/docker BERTH_CERTS_D=$W/certs.d BERTH_CLIENT_CONFIG=/dev/null BERTH_NO_PROGRESS=1
for p in $PB $PS; do mkdir -p "certs.d/localhost:$p"; cp ca.crt "certs.d/localhost:$p/"; done
echo "$PASS" | "$BERTH" login -u "$USER" --password-stdin "localhost:$PB" >/dev/null 2>&1

# --- a tree of SIZE_MIB: system libraries (compressible) topped up with random data
mkdir tree
cp -a /usr/lib/x86_64-linux-gnu tree/lib 2>/dev/null || true
have=$(du -sm tree | cut -f1)
while [ "$have" -gt "$SIZE_MIB" ]; do
	f=$(find tree -type f -size +1M | head -1); [ -n "$f" ] || break; rm -f "$f"; have=$(du -sm tree | cut -f1)
done
[ "$have" -lt "$SIZE_MIB" ] && head -c $(((SIZE_MIB - have) * 1024 * 1024)) /dev/urandom >tree/random.bin
TREE_MIB=$(du -sm tree | cut -f1)

declare -A R

# --- import: tar | berth import -   vs   tar | gzip (both cores for berth)
sync; t0=$(now)
tar -C tree -cf - . | gzip -6 >tree.tar.gz
t1=$(now); R[gzip.import]=$(secs $t0 $t1); R[gzip.size]=$(stat -c %s tree.tar.gz)
sync; t0=$(now)
tar -C tree -cf - . | "$BERTH" import - bench/img:v1 >/dev/null
t1=$(now); R[berth.import]=$(secs $t0 $t1)
M=$(python3 -c "import json; print(json.load(open('$W/store/refs.json'))['tags']['bench/img:v1'])")
R[berth.size]=$(python3 -c "import json; m=json.load(open('$W/store/blobs/sha256/${M#sha256:}')); print(m['layers'][0]['size'])")

# the same image for skopeo, as an OCI layout
"$BERTH" save --format oci -o img-oci.tar bench/img:v1
mkdir layout && tar -C layout -xf img-oci.tar && rm img-oci.tar
SK=(skopeo --insecure-policy)
CERTS_B="certs.d/localhost:$PB"; CERTS_S="certs.d/localhost:$PS"

# --- push
"$BERTH" tag bench/img:v1 "localhost:$PB/bench/img:v1"
sync; t0=$(now)
"$BERTH" push -q "localhost:$PB/bench/img:v1" >/dev/null
t1=$(now); R[berth.push]=$(secs $t0 $t1)
sync; t0=$(now)
"${SK[@]}" copy -q --dest-creds "$USER:$PASS" --dest-cert-dir "$CERTS_S" oci:layout:v1 "docker://localhost:$PS/bench/img:v1"
t1=$(now); R[skopeo.push]=$(secs $t0 $t1)

# --- pull into empty destinations
export BERTH_ROOT=$W/store2
sync; t0=$(now)
"$BERTH" pull -q "localhost:$PB/bench/img:v1" >/dev/null
t1=$(now); R[berth.pull]=$(secs $t0 $t1)
sync; t0=$(now)
"${SK[@]}" copy -q --src-creds "$USER:$PASS" --src-cert-dir "$CERTS_S" "docker://localhost:$PS/bench/img:v1" oci:pulled:v1
t1=$(now); R[skopeo.pull]=$(secs $t0 $t1)
[ "$(python3 -c "import json; print(json.load(open('$W/store2/refs.json'))['tags']['localhost:$PB/bench/img:v1'])")" = "$M" ] || { echo "berth pulled another digest" >&2; exit 1; }

printf '\n%s MiB tree (system libraries + random), TLS + basic auth, %s\n' "$TREE_MIB" "$(date -u +%Y-%m-%d)"
printf '| %-36s | %9s | %12s | %-26s |\n' "measure" "berth" "anchor" "ratio (berth/anchor)"
printf '|%s|%s|%s|%s|\n' "--------------------------------------" "-----------" "--------------" "----------------------------"
row() { printf '| %-36s | %9s | %12s | %-26s |\n' "$1" "$2" "$3" "$4"; }
row "push (s) vs skopeo copy" "${R[berth.push]}" "${R[skopeo.push]}" "$(ratio ${R[berth.push]} ${R[skopeo.push]}) (target <= 0.8)"
row "pull (s) vs skopeo copy" "${R[berth.pull]}" "${R[skopeo.pull]}" "$(ratio ${R[berth.pull]} ${R[skopeo.pull]}) (target <= 0.8)"
row "import (s) vs tar | gzip -6" "${R[berth.import]}" "${R[gzip.import]}" "$(ratio ${R[berth.import]} ${R[gzip.import]}) (target <= 1.0)"
row "layer size (MiB) vs tar | gzip -6" "$(python3 -c "print(f'{${R[berth.size]}/1048576:.1f}')")" "$(python3 -c "print(f'{${R[gzip.size]}/1048576:.1f}')")" "$(ratio ${R[berth.size]} ${R[gzip.size]})"
