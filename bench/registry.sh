#!/usr/bin/env bash
# registryd vs Debian's docker-registry (Docker Distribution 2.8) in one run, on
# this machine, with the same TLS certificate, the same htpasswd file and the same
# config.yml (only the address and storage directory differ):
#   - skopeo push and pull of a 512 MiB image
#   - 16 parallel GETs of that blob (aggregate MiB/s)
#   - manifest GETs with basic auth at 32 connections (wrk: req/s, p99)
#   - peak RSS of each server
# Absolute numbers wander on a shared machine; the ratios are the result.
# Usage: bench/registry.sh [SIZE_MIB]   (default 512)
#        bench/registry.sh gc [MANIFESTS]   garbage collection only (default 500
#   manifests, 4 blobs each, half of them untagged): berth's collector run
#   beside a serving registryd vs Distribution's offline garbage-collect, both
#   with --delete-untagged on copies of the same tree: time and bytes freed.
#        bench/registry.sh conns [N]   N concurrent pullers (default 256), one TLS
#   connection each: the servers' peak RSS and what a connection costs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = gc ]; then GC_MANIFESTS=${2:-500}; set -- 512; fi
if [ "${1:-}" = conns ]; then CONN_CLIENTS=${2:-256}; set -- 512; fi
SIZE_MIB=${1:-512}
GETS=${GETS:-16}   # parallel blob GETs
BERTH=${BERTH:-$PWD/dist/berth}
[ -x "$BERTH" ] || { echo "build first: make static" >&2; exit 1; }
for t in skopeo docker-registry wrk curl openssl; do
	command -v $t >/dev/null || { echo "missing $t: scripts/need.sh bench" >&2; exit 1; }
done

. bench/lib.sh
make_pki
cd "$W"

if [ -n "${GC_MANIFESTS:-}" ]; then
	command -v docker-registry >/dev/null || { echo "missing docker-registry" >&2; exit 1; }
	# The tree, written straight in Distribution's layout: each manifest has a
	# config and two layers of its own plus one base layer all share; every
	# other image loses its tag. Everything is two hours old (past the grace).
	python3 - "$W/gc-src/docker/registry/v2" "$GC_MANIFESTS" <<'PY'
import hashlib, json, os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
def blob(data):
    h = hashlib.sha256(data).hexdigest()
    d = os.path.join(root, "blobs/sha256", h[:2], h)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "data"), "wb").write(data)
    return "sha256:" + h, len(data)
def link(path, digest):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write(digest)
base = blob(os.urandom(64 * 1024))
for i in range(n):
    repo = os.path.join(root, "repositories", "bench", "r%d" % (i % 25))
    layers = [base] + [blob(os.urandom(16 * 1024)) for _ in range(2)]
    cfg = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"i": str(i)}},
                           "rootfs": {"type": "layers", "diff_ids": []}}).encode())
    m = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg[0], "size": cfg[1]},
         "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d, "size": s} for d, s in layers]}
    md, _ = blob(json.dumps(m).encode())
    for d, _ in layers + [cfg]:
        link(os.path.join(repo, "_layers/sha256", d[7:], "link"), d)
    link(os.path.join(repo, "_manifests/revisions/sha256", md[7:], "link"), md)
    if i % 2 == 0:
        link(os.path.join(repo, "_manifests/tags/t%d/current/link" % i), md)
        link(os.path.join(repo, "_manifests/tags/t%d/index/sha256" % i, md[7:], "link"), md)
old = time.time() - 7200
for dp, _, fs in os.walk(root):
    for f in fs:
        os.utime(os.path.join(dp, f), (old, old))
PY
	cp -a gc-src berth-gc; cp -a gc-src dist-gc
	for who in berth dist; do
		printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%s\ngc:\n  interval: 1000h\n  grace: 1s\n  untagged: true\n' \
			"$W/$who-gc" "$(port)" >"$who-gc.yml"
	done
	blobs() { find "$1/docker/registry/v2/blobs" -name data | wc -l; }
	bytes() { find "$1/docker/registry/v2/blobs" -name data -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
	B0=$(bytes berth-gc); N0=$(blobs berth-gc)
	sync; t0=$(now)
	docker-registry garbage-collect --delete-untagged dist-gc.yml >dist-gc.log 2>&1
	t1=$(now); DT=$(secs $t0 $t1)
	# berth's collector runs beside the registry it collects (online).
	"$BERTH" registryd berth-gc.yml >berth-gc.log 2>&1 & PIDS+=($!)
	for _ in $(seq 100); do curl -s "http://$(awk '/addr:/ {print $2}' berth-gc.yml)/v2/" -o /dev/null && break; sleep 0.1; done
	sync; t0=$(now)
	"$BERTH" registryd garbage-collect --delete-untagged berth-gc.yml >berth-gc.out
	t1=$(now); BT=$(secs $t0 $t1)
	BF=$((B0 - $(bytes berth-gc))); DF=$((B0 - $(bytes dist-gc)))
	printf '\n%s manifests, %s blobs (%s bytes), half untagged, %s\n' "$GC_MANIFESTS" "$N0" "$B0" "$(date -u +%Y-%m-%d)"
	printf '| %-28s | %12s | %12s | %-14s |\n' measure berth distribution ratio
	printf '| %-28s | %12s | %12s | %-14s |\n' "collection time (s)" "$BT" "$DT" "$(python3 -c "print(f'{$DT/$BT:.2f}x faster' if $BT else 'n/a')")"
	printf '| %-28s | %12s | %12s | %-14s |\n' "bytes freed" "$BF" "$DF" "$([ "$BF" = "$DF" ] && echo same || echo DIFFERENT)"
	printf '| %-28s | %12s | %12s | %-14s |\n' "blobs left" "$(blobs berth-gc)" "$(blobs dist-gc)" ""
	exit 0
fi
USER=bench PASS=bench-pass-1
echo "$PASS" | "$BERTH" htpasswd -c -i htpasswd "$USER" 2>/dev/null
AUTH=$(printf '%s:%s' "$USER" "$PASS" | base64)

config() { # config NAME PORT
	cat >"$1.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $W/$1-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
  tls:
    certificate: $W/server.crt
    key: $W/server.key
auth:
  htpasswd:
    realm: basic-realm
    path: $W/htpasswd
EOF
}
if [ -n "${CONN_CLIENTS:-}" ]; then
	# N pullers at once, one TLS connection each with basic auth, each reading a
	# 16 MiB blob at 1 MiB/s (worker nodes on a busy network), so all N are open
	# together; the servers' peak RSS is the measure.
	BP=$(port); DP=$(port)
	config berth "$BP"; config dist "$DP"
	"$BERTH" registryd berth.yml >berth.log 2>&1 & PIDS+=($!); BPID=$!
	docker-registry serve dist.yml >dist.log 2>&1 & PIDS+=($!); DPID=$!
	wait_https "$BP"; wait_https "$DP"
	head -c $((16 * 1024 * 1024)) /dev/urandom >blob16
	BD=$(sha256sum blob16 | cut -d' ' -f1)
	for p in $BP $DP; do
		loc=$(curl -sf --cacert ca.crt -H "Authorization: Basic $AUTH" -X POST -D - -o /dev/null \
			"https://localhost:$p/v2/bench/conns/blobs/uploads/" | awk 'tolower($1)=="location:" {print $2}' | tr -d '\r')
		case $loc in /*) loc="https://localhost:$p$loc" ;; esac
		case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
		curl -sf --cacert ca.crt -H "Authorization: Basic $AUTH" -X PUT --data-binary @blob16 \
			-H "Content-Type: application/octet-stream" "$loc${sep}digest=sha256:$BD" -o /dev/null
	done
	base_b=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$BPID/status)
	base_d=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$DPID/status)
	pull_all() { # PORT
		local pids=() j
		for _ in $(seq "$CONN_CLIENTS"); do
			curl -sf --cacert ca.crt -H "Authorization: Basic $AUTH" --limit-rate 1M -o /dev/null \
				"https://localhost:$1/v2/bench/conns/blobs/sha256:$BD" &
			pids+=($!)
		done
		for j in "${pids[@]}"; do wait "$j" || { echo "a puller failed on port $1 (berth $BP, distribution $DP)" >&2; tail -5 berth.log dist.log >&2; exit 1; }; done
	}
	pull_all "$BP"; pull_all "$DP"
	peak_b=$(peak_mib $BPID)
	peak_d=$(peak_mib $DPID)
	printf '\n%s concurrent pullers (TLS, basic auth, 16 MiB at 1 MiB/s each), %s\n' "$CONN_CLIENTS" "$(date -u +%Y-%m-%d)"
	printf '| %-30s | %8s | %12s | %-18s |\n' measure berth distribution ratio
	printf '| %-30s | %8s | %12s | %-18s |\n' "idle RSS (MiB)" "$base_b" "$base_d" ""
	printf '| %-30s | %8s | %12s | %-18s |\n' "peak RSS (MiB)" "$peak_b" "$peak_d" "$(python3 -c "print(f'{$peak_b/$peak_d:.2f} (target <= 0.33)')")"
	printf '| %-30s | %8s | %12s | %-18s |\n' "per connection (KiB)" "$(python3 -c "print(f'{($peak_b-$base_b)*1024/$CONN_CLIENTS:.0f}')")" "$(python3 -c "print(f'{($peak_d-$base_d)*1024/$CONN_CLIENTS:.0f}')")" ""
	exit 0
fi
BP=$(port); DP=$(port)
config berth "$BP"; config dist "$DP"
"$BERTH" registryd berth.yml >berth.log 2>&1 & PIDS+=($!); BPID=$!
docker-registry serve dist.yml >dist.log 2>&1 & PIDS+=($!); DPID=$!
wait_https "$BP"; wait_https "$DP"

# --- a SIZE_MIB image as an OCI layout (one incompressible layer) -------------

best() { python3 -c "import sys; v=[float(x) for x in sys.argv[2:]]; print(f'{(min(v) if sys.argv[1]==\"min\" else max(v)):.2f}')" "$@"; }
SK=(skopeo --insecure-policy)

declare -A R
measure() { # measure WHO PORT ROUND: push, pull, 16 parallel GETs of image ROUND
	local who=$1 p=$2 n=$3 LD t0 t1 pids=()
	LD=$(cat img$n/LAYER)
	sync; t0=$(now)
	"${SK[@]}" copy -q --dest-creds "$USER:$PASS" --dest-cert-dir certs oci:img$n:v1 "docker://localhost:$p/bench/img$n:v1"
	t1=$(now); R[$who.push]+=" $(secs $t0 $t1)"
	rm -rf out; sync; t0=$(now)
	"${SK[@]}" copy -q --src-creds "$USER:$PASS" --src-cert-dir certs "docker://localhost:$p/bench/img$n:v1" oci:out:v1
	t1=$(now); R[$who.pull]+=" $(secs $t0 $t1)"
	cmp -s out/blobs/sha256/$LD img$n/blobs/sha256/$LD || { echo "$who: pulled layer differs" >&2; exit 1; }
	rm -rf out; sync
	t0=$(now)
	for _ in $(seq "$GETS"); do
		curl -s --cacert ca.crt -H "Authorization: Basic $AUTH" -o /dev/null "https://localhost:$p/v2/bench/img$n/blobs/sha256:$LD" &
		pids+=($!)
	done
	for j in "${pids[@]}"; do wait "$j"; done
	t1=$(now); R[$who.get16]+=" $(python3 -c "print(f'{$GETS * $SIZE_MIB / ($t1 - $t0):.0f}')")"
}

# Two rounds in opposite order, each with its own image; the best of each is kept,
# so neither server pays more for the other's page-cache writeback.
make_image img1; measure berth "$BP" 1; measure dist "$DP" 1
make_image img2; measure dist "$DP" 2; measure berth "$BP" 2
for who in berth dist; do
	for k in push pull; do R[$who.$k]=$(best min ${R[$who.$k]}); done
	R[$who.get16]=$(best max ${R[$who.get16]}); R[$who.get16]=${R[$who.get16]%.*}
	p=$([ $who = berth ] && echo $BP || echo $DP)
	wrk -t2 -c32 -d10s --latency -H "Authorization: Basic $AUTH" \
		-H "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json" \
		"https://localhost:$p/v2/bench/img1/manifests/v1" >wrk.$who 2>&1
	R[$who.rps]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' wrk.$who)
	R[$who.p99]=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; printf "%.1f", v}' wrk.$who)
	errs=$(awk '/Non-2xx/ {print $NF}' wrk.$who); [ -z "$errs" ] || { echo "$who: $errs non-2xx answers in wrk" >&2; cat wrk.$who >&2; exit 1; }
done
R[berth.rss]=$(peak_mib $BPID)
R[dist.rss]=$(peak_mib $DPID)

printf '\n%s MiB image, TLS + basic auth, %s\n' "$SIZE_MIB" "$(date -u +%Y-%m-%d)"
printf '| %-34s | %10s | %12s | %-22s |\n' "measure" "berth" "distribution" "ratio"
printf '|%s|%s|%s|%s|\n' "------------------------------------" "------------" "--------------" "------------------------"
row() { printf '| %-34s | %10s | %12s | %-22s |\n' "$1" "$2" "$3" "$4"; }
row "skopeo push (s, lower is better)" "${R[berth.push]}" "${R[dist.push]}" "$(ratio ${R[dist.push]} ${R[berth.push]})x faster"
row "skopeo pull (s, lower is better)" "${R[berth.pull]}" "${R[dist.pull]}" "$(ratio ${R[dist.pull]} ${R[berth.pull]})x faster"
row "$GETS parallel blob GETs (MiB/s)" "${R[berth.get16]}" "${R[dist.get16]}" "$(ratio ${R[berth.get16]} ${R[dist.get16]})x (target >= 1.2)"
row "manifest GET, 32 conns (req/s)" "${R[berth.rps]}" "${R[dist.rps]}" "$(ratio ${R[berth.rps]} ${R[dist.rps]})x (target >= 5)"
row "manifest GET p99 (ms)" "${R[berth.p99]}" "${R[dist.p99]}" "target <= 50 ms"
row "peak RSS (MiB)" "${R[berth.rss]}" "${R[dist.rss]}" "$(ratio ${R[berth.rss]} ${R[dist.rss]}) (target <= 0.33)"
