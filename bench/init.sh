#!/usr/bin/env bash
# berth init vs Debian's dumb-init and tini, in one run on this machine:
#   - start-to-exit time of `X /bin/true` (hyperfine, no shell in between)
#   - resident memory (VmRSS) of X while it supervises `sleep`
# berth runs through a `dumb-init` link, as the site's images use it.
# Targets: start time <= 1.2x dumb-init's, RSS <= 2x dumb-init's.
# Absolute numbers wander on a shared machine; the ratios are the result.
# Usage: bench/init.sh [RUNS]   (default 2000 hyperfine runs per tool)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-2000}
BERTH=${BERTH:-$PWD/dist/berth}
if [ ! -x "$BERTH" ]; then
	# The machine's cargo lock keeps this build from racing another one.
	flock /tmp/berth-cargo.lock make static >&2
fi
for t in hyperfine dumb-init tini awk; do
	command -v $t >/dev/null || { echo "missing $t: scripts/need.sh bench" >&2; exit 1; }
done

W=$(mktemp -d /var/tmp/berth-bench-init.XXXXXX)
trap 'rm -rf "$W"' EXIT
ln -s "$BERTH" "$W/dumb-init"
B="$W/dumb-init"
D=$(command -v dumb-init)
T=$(command -v tini)

# --- start-to-exit ------------------------------------------------------------
hyperfine -N --style none --warmup 100 --runs "$RUNS" \
	--export-csv "$W/start.csv" \
	-n berth "$B /bin/true" -n dumb-init "$D /bin/true" -n tini "$T /bin/true" >/dev/null 2>&1
# CSV columns: command,mean,stddev,median,user,system,min,max (seconds)
start() { awk -F, -v n="$1" '$1 == n {printf "%.3f", $4 * 1000}' "$W/start.csv"; }
startsd() { awk -F, -v n="$1" '$1 == n {printf "%.3f", $3 * 1000}' "$W/start.csv"; }

# --- RSS while supervising ------------------------------------------------------
rss_once() { # rss_once INIT: VmRSS (KiB) of INIT running `sleep`
	"$1" sleep 600 2>/dev/null &
	local p=$!
	# wait until the child is running, so init sits in its wait loop
	for _ in $(seq 200); do
		[ -n "$(cat /proc/$p/task/$p/children 2>/dev/null)" ] && break
		sleep 0.01
	done
	sleep 0.2
	awk '/^VmRSS:/ {print $2}' "/proc/$p/status"
	kill -TERM "$p"
	wait "$p" 2>/dev/null || true
}
rss() { # median of 5
	for _ in 1 2 3 4 5; do rss_once "$1"; done | sort -n | sed -n 3p
}

declare -A S SD R
for who in berth dumb-init tini; do
	S[$who]=$(start "$who")
	SD[$who]=$(startsd "$who")
done
R[berth]=$(rss "$B")
R[dumb-init]=$(rss "$D")
R[tini]=$(rss "$T")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t) ? "ok" : "MISSED" }'; }
sr=$(ratio "${S[berth]}" "${S[dumb-init]}")
rr=$(ratio "${R[berth]}" "${R[dumb-init]}")

printf '\n`X /bin/true` start-to-exit and idle RSS, %s, %s, %s runs\n' \
	"$(date -u +%Y-%m-%d)" "$(uname -r)" "$RUNS"
printf 'berth %s (%s), %s, %s\n\n' "$("$BERTH" --version | awk '{print $2}')" \
	"$(du -k "$BERTH" | awk '{printf "%.1f MiB static", $1/1024}')" \
	"$("$D" -V 2>&1 | tr -d '\n')" "$("$T" --version 2>&1 | tr -d '\n')"
printf '| %-34s | %12s | %12s | %12s | %-17s |\n' "measure" "berth init" "dumb-init" "tini" "berth / dumb-init"
printf '|%s|%s|%s|%s|%s|\n' "------------------------------------" "--------------" "--------------" "--------------" "-------------------"
printf '| %-34s | %12s | %12s | %12s | %-17s |\n' "start to exit, median (ms)" \
	"${S[berth]}" "${S[dumb-init]}" "${S[tini]}" "${sr}x (<= 1.2 $(verdict "$sr" 1.2))"
printf '| %-34s | %12s | %12s | %12s | %-17s |\n' "  stddev (ms)" \
	"${SD[berth]}" "${SD[dumb-init]}" "${SD[tini]}" ""
printf '| %-34s | %12s | %12s | %12s | %-17s |\n' "RSS supervising sleep (KiB)" \
	"${R[berth]}" "${R[dumb-init]}" "${R[tini]}" "${rr}x (<= 2 $(verdict "$rr" 2))"
