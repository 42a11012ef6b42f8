#!/usr/bin/env bash
# berth engined vs Debian's Docker Engine 20.10 (dockerd + containerd + runc) in one
# run, on this machine, driven by the same docker CLI and the same busybox image:
#   - `docker run --rm IMG /bin/true`, no network and on a bridge (hyperfine median)
#   - `docker run -d`, `docker stop` (the job exits on SIGTERM), `docker rm`, and
#     `docker rm -f` of a running container (medians of RUNS rounds)
#   - `docker ps -a` with N containers running (hyperfine median)
#   - daemon memory idle (dockerd + containerd vs engined) and with N containers
#     running: RSS and PSS (PSS shares the binary's pages out fairly, so a static
#     binary mapped by many shims is counted once), and the RSS of one container's
#     shim (containerd-shim-runc-v2 vs berth's engined-shim), 2 s after the last
#     start: berth's shim lets go of the start-up code's pages half a second in
# Each daemon has its own socket, data root, exec root and bridge; Docker runs with
# --iptables=false so neither touches the host firewall.
# Absolute numbers wander on a shared machine; the ratios are the result.
# Usage: bench/engine.sh [RUNS] [N]   (default 30 rounds, 10 containers)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-30}
N=${2:-10}
BERTH=${BERTH:-$PWD/dist/berth}
[ -x "$BERTH" ] || { echo "build first: make static" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root: both engines need it" >&2; exit 1; }
for t in dockerd containerd hyperfine busybox python3 ip bc; do
	command -v $t >/dev/null || { echo "missing $t: scripts/need.sh bench" >&2; exit 1; }
done
# Debian's CLI (20.10) for both, so the client costs the same on each side.
CLI=/usr/bin/docker
[ -x "$CLI" ] || CLI=$(command -v docker)

. bench/lib.sh
TAG=$$
BB=brb$TAG DB=brd$TAG
cleanup_engines() {
	for s in "$W/docker.sock" "$W/berth.sock"; do
		ids=$($CLI -H "unix://$s" ps -aq 2>/dev/null || true)
		[ -n "$ids" ] && $CLI -H "unix://$s" rm -f $ids >/dev/null 2>&1 || true
	done
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
	PIDS=()
	ip link del "$BB" 2>/dev/null || true
	ip link del "$DB" 2>/dev/null || true
	# Docker leaves its exec root's mounts (netns files) behind when killed.
	grep -o " $W/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}
trap 'cleanup_engines; cleanup' EXIT

# Two bridges on private subnets, one per engine, made here so both get the same.
ip link add "$BB" type bridge && ip addr add 10.196.1.1/24 dev "$BB" && ip link set "$BB" up
ip link add "$DB" type bridge && ip addr add 10.196.2.1/24 dev "$DB" && ip link set "$DB" up

# --- the engines ----------------------------------------------------------------
mkdir -p "$W/docker-data" "$W/docker-exec" "$W/berth-data" "$W/berth-exec"
dockerd -H "unix://$W/docker.sock" --data-root "$W/docker-data" --exec-root "$W/docker-exec" \
	--pidfile "$W/docker.pid" --storage-driver overlay2 --iptables=false --ip-masq=false \
	--bridge="$DB" --containerd-namespace "bench$TAG" >"$W/docker.log" 2>&1 &
PIDS+=($!); DPID=$!
"$BERTH" engined -H "unix://$W/berth.sock" --data-root "$W/berth-data" --exec-root "$W/berth-exec" \
	--pidfile "$W/berth.pid" --bridge="$BB" --cgroup-parent "berth-bench-$TAG" >"$W/berth.log" 2>&1 &
PIDS+=($!); EPID=$!
up() { # up SOCK PID LOG
	for _ in $(seq 600); do
		$CLI -H "unix://$1" version >/dev/null 2>&1 && return 0
		kill -0 "$2" 2>/dev/null || { echo "daemon died:" >&2; tail -20 "$3" >&2; exit 1; }
		sleep 0.1
	done
	echo "daemon on $1 did not answer" >&2; tail -20 "$3" >&2; exit 1
}
up "$W/docker.sock" "$DPID" "$W/docker.log"
up "$W/berth.sock" "$EPID" "$W/berth.log"
D="$CLI -H unix://$W/docker.sock"
B="$CLI -H unix://$W/berth.sock"

# --- one busybox image, imported into both ---------------------------------------
mkdir -p "$W/rootfs/bin"
cp "$(command -v busybox)" "$W/rootfs/bin/busybox"
for a in sh true sleep echo cat; do ln -s busybox "$W/rootfs/bin/$a"; done
tar -C "$W/rootfs" -cf "$W/bb.tar" .
$D import "$W/bb.tar" bb:bench >/dev/null
$B import "$W/bb.tar" bb:bench >/dev/null

# --- memory -------------------------------------------------------------------------
kib() { # kib FIELD PID...: sum of FIELD (Rss, Pss) in KiB over the processes
	local f=$1 t=0 v
	shift
	for p in "$@"; do
		v=$(awk -v f="$f:" '$1 == f {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
		t=$((t + ${v:-0}))
	done
	echo $t
}
# dockerd starts its own containerd; each container adds a containerd-shim-runc-v2.
docker_shims() { pgrep -f "containerd-shim-runc-v2 -namespace bench$TAG" || true; }
docker_pids() {
	echo "$DPID"
	pgrep -P "$DPID" || true
	docker_shims
}
# engined and its shims (children of engined while it lives).
berth_shims() { pgrep -f "engined-shim $W/berth-data" || true; }
berth_pids() {
	echo "$EPID"
	berth_shims
}
avg_shim() { # avg_shim PID...: mean RSS (KiB) of the shims, which must be N
	[ $# = "$N" ] || { echo "expected $N shims, found $#" >&2; exit 1; }
	echo $(($(kib Rss "$@") / $#))
}
settle() { sync; sleep 2; }

settle
IDLE_D_RSS=$(kib Rss $(docker_pids)) IDLE_D_PSS=$(kib Pss $(docker_pids))
IDLE_B_RSS=$(kib Rss $(berth_pids)) IDLE_B_PSS=$(kib Pss $(berth_pids))

# --- start to exit ---------------------------------------------------------------
hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-csv "$W/run.csv" \
	-n docker-none "$D run --rm --network none bb:bench /bin/true" \
	-n berth-none "$B run --rm --network none bb:bench /bin/true" \
	-n docker-bridge "$D run --rm bb:bench /bin/true" \
	-n berth-bridge "$B run --rm bb:bench /bin/true" >/dev/null 2>&1
med() { awk -F, -v n="$2" '$1 == n {printf "%.1f", $4 * 1000}' "$1"; }

# --- detached start, then forced removal --------------------------------------------
ms() { echo "($2 - $1) * 1000" | bc -l; } # ms START END
median() { sort -n | awk '{a[NR] = $1} END {printf "%.1f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# A job that ends on SIGTERM (PID 1 ignores a signal it has no handler for).
JOB='trap "exit 0" TERM; sleep 600 & wait'
detached() { # detached CLI...: "RUN_D STOP RM RM_F" medians in ms
	local s e id
	: >"$W/run.ms"; : >"$W/stop.ms"; : >"$W/rm.ms"; : >"$W/rmf.ms"
	for _ in $(seq "$RUNS"); do
		s=$(date +%s.%N); id=$("$@" run -d bb:bench sh -c "$JOB"); e=$(date +%s.%N)
		ms "$s" "$e" >>"$W/run.ms"
		s=$(date +%s.%N); "$@" stop "$id" >/dev/null; e=$(date +%s.%N)
		ms "$s" "$e" >>"$W/stop.ms"
		s=$(date +%s.%N); "$@" rm "$id" >/dev/null; e=$(date +%s.%N)
		ms "$s" "$e" >>"$W/rm.ms"
		id=$("$@" run -d bb:bench sleep 600)
		s=$(date +%s.%N); "$@" rm -f "$id" >/dev/null; e=$(date +%s.%N)
		ms "$s" "$e" >>"$W/rmf.ms"
	done
	for f in run stop rm rmf; do printf '%s ' "$(median <"$W/$f.ms")"; done
	echo
}
read -r D_START D_STOP D_RMS D_RM < <(detached $D)
read -r B_START B_STOP B_RMS B_RM < <(detached $B)

# --- N running containers: memory and listing --------------------------------------
for i in $(seq "$N"); do
	$D run -d --name "d$i" bb:bench sleep 600 >/dev/null
	$B run -d --name "b$i" bb:bench sleep 600 >/dev/null
done
settle
LOAD_D_RSS=$(kib Rss $(docker_pids)) LOAD_D_PSS=$(kib Pss $(docker_pids))
LOAD_B_RSS=$(kib Rss $(berth_pids)) LOAD_B_PSS=$(kib Pss $(berth_pids))
SHIM_D=$(avg_shim $(docker_shims)) SHIM_B=$(avg_shim $(berth_shims))
hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-csv "$W/ps.csv" \
	-n docker "$D ps -a" -n berth "$B ps -a" >/dev/null 2>&1

# --- report --------------------------------------------------------------------------
mib() { python3 -c "print(f'{$1 / 1024:.2f}')"; }
per() { python3 -c "print(f'{($2 - $1) / $N / 1024:.2f}')"; }
echo "engine: berth engined vs dockerd 20.10 + containerd + runc, one run, $RUNS rounds, CLI $($CLI --version | cut -d, -f1)"
printf '%-42s %12s %12s %14s\n' "" "dockerd" "berth" "berth/dockerd"
row() { printf '%-42s %12s %12s %14s\n' "$1" "$2" "$3" "$(ratio "$3" "$2")"; }
row "run --rm --network none /bin/true (ms)" "$(med "$W/run.csv" docker-none)" "$(med "$W/run.csv" berth-none)"
row "run --rm /bin/true on a bridge (ms)" "$(med "$W/run.csv" docker-bridge)" "$(med "$W/run.csv" berth-bridge)"
row "run -d (ms)" "$D_START" "$B_START"
row "stop, the job exits on SIGTERM (ms)" "$D_STOP" "$B_STOP"
row "rm of the stopped container (ms)" "$D_RMS" "$B_RMS"
row "run -d + stop + rm (ms)" "$(echo "$D_START + $D_STOP + $D_RMS" | bc)" "$(echo "$B_START + $B_STOP + $B_RMS" | bc)"
row "rm -f of a running container (ms)" "$D_RM" "$B_RM"
row "ps -a with $N running (ms)" "$(med "$W/ps.csv" docker)" "$(med "$W/ps.csv" berth)"
row "daemon RSS idle (MiB)" "$(mib "$IDLE_D_RSS")" "$(mib "$IDLE_B_RSS")"
row "daemon PSS idle (MiB)" "$(mib "$IDLE_D_PSS")" "$(mib "$IDLE_B_PSS")"
row "daemon+shims RSS, $N running (MiB)" "$(mib "$LOAD_D_RSS")" "$(mib "$LOAD_B_RSS")"
row "daemon+shims PSS, $N running (MiB)" "$(mib "$LOAD_D_PSS")" "$(mib "$LOAD_B_PSS")"
row "RSS of one container's shim (MiB)" "$(mib "$SHIM_D")" "$(mib "$SHIM_B")"
row "PSS per running container (MiB)" "$(per "$IDLE_D_PSS" "$LOAD_D_PSS")" "$(per "$IDLE_B_PSS" "$LOAD_B_PSS")"
