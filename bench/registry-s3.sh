#!/usr/bin/env bash
# registryd vs Debian's docker-registry (Docker Distribution 2.8, its s3-aws
# driver) on the same Ceph RADOS gateway, in one run: both with TLS, basic auth,
# the same config.yml apart from address and rootdirectory, one bucket.
#   - skopeo push and pull of a 512 MiB image (blob GETs redirected to presigned
#     URLs, Distribution's default)
#   - 16 parallel GETs of that blob, redirected and proxied
#     (storage.redirect.disable: true, where the registry carries the bytes)
#   - manifest GETs with basic auth at 32 connections (wrk: req/s)
# The gateway is a single-node Ceph on loopback (memstore OSD), started here by
# tests/peers/ceph-rgw.sh. Absolute numbers wander on a shared machine; the
# ratios are the result.
# Usage: bench/registry-s3.sh [SIZE_MIB]   (default 512)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-512}
GETS=${GETS:-16}
BERTH=${BERTH:-$PWD/dist/berth}
[ -x "$BERTH" ] || { echo "build first: make static" >&2; exit 1; }
for t in skopeo docker-registry wrk curl openssl radosgw ceph-mon ceph-osd; do
	command -v $t >/dev/null || { echo "missing $t: scripts/need.sh bench" >&2; exit 1; }
done
PEERS=$PWD/tests/peers

. bench/lib.sh
make_pki
cd "$W"

# The gateway; its daemons go when this script does.
RGW=$(port)
bash "$PEERS/ceph-rgw.sh" "$W/ceph" "$(port)" "$RGW" 61500 $$ $((12 << 30)) >ceph.out 2>&1 \
	|| { cat ceph.out >&2; exit 1; }
grep -q READY ceph.out || { cat ceph.out >&2; exit 1; }

USER=bench PASS=bench-pass-1
AUTH=$(printf '%s:%s' "$USER" "$PASS" | base64)
echo "$PASS" | "$BERTH" htpasswd -c -i htpasswd "$USER" 2>/dev/null
config() { # config NAME PORT ROOT REDIRECT_DISABLE
	cat >"$1.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: BERTHTESTACCESS
    secretkey: berth-test-secret-key-0123
    region: us-east-1
    regionendpoint: http://127.0.0.1:$RGW
    bucket: bench
    rootdirectory: /$3
    secure: false
    v4auth: true
    chunksize: 10485760
  redirect:
    disable: $4
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
  secret: bench-secret
  tls:
    certificate: $W/server.crt
    key: $W/server.key
auth:
  htpasswd:
    realm: bench
    path: $W/htpasswd
EOF
}
BP=$(port); BX=$(port); DP=$(port); DX=$(port)
config berth "$BP" berth false; config berth-proxy "$BX" berth true
config dist "$DP" dist false; config dist-proxy "$DX" dist true
# berth first: it makes the bucket Distribution expects to find.
"$BERTH" registryd berth.yml >berth.log 2>&1 & PIDS+=($!); BPID=$!
wait_https "$BP"
"$BERTH" registryd berth-proxy.yml >berth-proxy.log 2>&1 & PIDS+=($!)
# Distribution's AWS SDK reads AWS_*; it gets only its config file.
env -u AWS_CA_BUNDLE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY docker-registry serve dist.yml >dist.log 2>&1 & PIDS+=($!); DPID=$!
env -u AWS_CA_BUNDLE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY docker-registry serve dist-proxy.yml >dist-proxy.log 2>&1 & PIDS+=($!)
wait_https "$BX"; wait_https "$DP"; wait_https "$DX"


best() { python3 -c "import sys; v=[float(x) for x in sys.argv[2:]]; print(f'{(min(v) if sys.argv[1]==\"min\" else max(v)):.2f}')" "$@"; }
SK=(skopeo --insecure-policy)
declare -A R
gets() { # gets PORT LAYER: MiB/s of $GETS parallel GETs (redirects followed)
	local p=$1 LD=$2 t0 t1 pids=() j
	t0=$(now)
	for _ in $(seq "$GETS"); do
		curl -sfL --cacert ca.crt -H "Authorization: Basic $AUTH" -o /dev/null "https://localhost:$p/v2/bench/img$n/blobs/sha256:$LD" &
		pids+=($!)
	done
	for j in "${pids[@]}"; do wait "$j" || { echo "a GET failed on port $p" >&2; exit 1; }; done
	t1=$(now); python3 -c "print(f'{$GETS * $SIZE_MIB / ($t1 - $t0):.0f}')"
}
measure() { # measure WHO PORT PROXY_PORT ROUND
	local who=$1 p=$2 px=$3 n=$4 LD t0 t1
	LD=$(cat img$n/LAYER)
	sync; t0=$(now)
	"${SK[@]}" copy -q --dest-creds "$USER:$PASS" --dest-cert-dir certs oci:img$n:v1 "docker://localhost:$p/bench/img$n:v1"
	t1=$(now); R[$who.push]+=" $(secs $t0 $t1)"
	rm -rf out; sync; t0=$(now)
	"${SK[@]}" copy -q --src-creds "$USER:$PASS" --src-cert-dir certs "docker://localhost:$p/bench/img$n:v1" oci:out:v1
	t1=$(now); R[$who.pull]+=" $(secs $t0 $t1)"
	cmp -s out/blobs/sha256/$LD img$n/blobs/sha256/$LD || { echo "$who: pulled layer differs" >&2; exit 1; }
	rm -rf out
	R[$who.redir]+=" $(gets "$p" "$LD")"
	R[$who.proxy]+=" $(gets "$px" "$LD")"
}

make_image img1; measure berth "$BP" "$BX" 1; measure dist "$DP" "$DX" 1
make_image img2; measure dist "$DP" "$DX" 2; measure berth "$BP" "$BX" 2
for who in berth dist; do
	for k in push pull; do R[$who.$k]=$(best min ${R[$who.$k]}); done
	for k in redir proxy; do R[$who.$k]=$(best max ${R[$who.$k]}); R[$who.$k]=${R[$who.$k]%.*}; done
	p=$([ $who = berth ] && echo $BP || echo $DP)
	wrk -t2 -c32 -d10s -H "Authorization: Basic $AUTH" \
		-H "Accept: application/vnd.oci.image.manifest.v1+json" \
		"https://localhost:$p/v2/bench/img1/manifests/v1" >wrk.$who 2>&1
	R[$who.rps]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' wrk.$who)
	errs=$(awk '/Non-2xx/ {print $NF}' wrk.$who); [ -z "$errs" ] || { echo "$who: $errs non-2xx answers in wrk" >&2; cat wrk.$who >&2; exit 1; }
done
R[berth.rss]=$(peak_mib $BPID)
R[dist.rss]=$(peak_mib $DPID)

printf '\n%s MiB image on Ceph radosgw (memstore, loopback), TLS + basic auth, %s\n' "$SIZE_MIB" "$(date -u +%Y-%m-%d)"
printf '| %-38s | %10s | %12s | %-22s |\n' "measure" "berth" "distribution" "ratio"
printf '|%s|%s|%s|%s|\n' "----------------------------------------" "------------" "--------------" "------------------------"
row() { printf '| %-38s | %10s | %12s | %-22s |\n' "$1" "$2" "$3" "$4"; }
row "skopeo push (s, lower is better)" "${R[berth.push]}" "${R[dist.push]}" "$(ratio ${R[dist.push]} ${R[berth.push]})x (target >= 1)"
row "skopeo pull (s, lower is better)" "${R[berth.pull]}" "${R[dist.pull]}" "$(ratio ${R[dist.pull]} ${R[berth.pull]})x (target >= 1)"
row "$GETS parallel GETs, redirected (MiB/s)" "${R[berth.redir]}" "${R[dist.redir]}" "$(ratio ${R[berth.redir]} ${R[dist.redir]})x"
row "$GETS parallel GETs, proxied (MiB/s)" "${R[berth.proxy]}" "${R[dist.proxy]}" "$(ratio ${R[berth.proxy]} ${R[dist.proxy]})x (target >= 1.2)"
row "manifest GET, 32 conns (req/s)" "${R[berth.rps]}" "${R[dist.rps]}" "$(ratio ${R[berth.rps]} ${R[dist.rps]})x"
row "peak RSS (MiB)" "${R[berth.rss]}" "${R[dist.rss]}" "$(ratio ${R[berth.rss]} ${R[dist.rss]})"
