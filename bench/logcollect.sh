#!/usr/bin/env bash
# berth logcollect vs rsyslog's own imfile, in one run: N lines written to a
# container's log-directory file are forwarded over TCP (RFC 5424, octet
# counting) to the same kind of sink, a private rsyslogd on loopback writing
# what it receives to a file. Measured: lines per second from the start of the
# shipper until the sink has all N, and the shipper's peak RSS (VmHWM).
# logcollect reads the file as it reads any container's: through a graph root
# with one container record whose log directory holds the file.
# Usage: bench/logcollect.sh [N]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
BERTH=${BERTH:-$PWD/dist/berth}
[ -x "$BERTH" ] || { echo "build first: make static" >&2; exit 1; }
command -v rsyslogd >/dev/null || { echo "missing rsyslogd: scripts/need.sh bench" >&2; exit 1; }
W=$(mktemp -d /tmp/berth-bench-logcollect.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# the sink: received lines counted in a file
sink() { # DIR PORT -> pid
	mkdir -p "$1"
	cat >"$1/rsyslog.conf" <<CONF
global(workDirectory="$1" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" port="$2" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\n")
*.* action(type="omfile" file="$1/received.log" template="raw" asyncWriting="on" flushInterval="1" ioBufferSize="256k")
CONF
	rsyslogd -n -f "$1/rsyslog.conf" -i "$1/pid" >"$1/out" 2>&1 &
	echo $!
}
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
count() { [ -f "$1" ] && wc -l <"$1" || echo 0; }

# the same file for both: condor-like lines of ~100 bytes
mkdir -p "$W/logs/worker_20261201T000000"
python3 - "$W/logs/worker_20261201T000000/MasterLog" "$N" <<'PY'
import sys
n = int(sys.argv[2])
with open(sys.argv[1], "w") as f:
    for i in range(n):
        f.write(f"12/01/26 10:00:00 (pid:4242) Daemon Log: job {i:08d} started on slot1@wn024 with some text\n")
PY
LINES=$N
mkdir -p "$W/graph/containers/c0ffee"
cat >"$W/graph/containers/c0ffee/config.json" <<JSON
{"id":"c0ffee$(printf '0%.0s' {1..58})","name":"worker","image":"sl6-umd3condv4","created":"2026-12-01T00:00:00.000000000Z","log_dir":"$W/logs/worker_20261201T000000"}
JSON

run_until() { # SINKDIR PID -> seconds, hwm KiB
	local start end hwm=0 h
	start=$(date +%s.%N)
	while [ "$(count "$1/received.log")" -lt "$LINES" ]; do
		h=$(awk '/VmHWM/{print $2}' /proc/"$2"/status 2>/dev/null || echo 0)
		[ "${h:-0}" -gt "$hwm" ] && hwm=$h
		sleep 0.05
	done
	end=$(date +%s.%N)
	h=$(awk '/VmHWM/{print $2}' /proc/"$2"/status 2>/dev/null || echo 0)
	[ "${h:-0}" -gt "$hwm" ] && hwm=$h
	echo "$(echo "$end - $start" | bc) $hwm"
}

# berth logcollect
P1=$(free_port); S1=$(sink "$W/sink1" "$P1"); pids+=("$S1"); wait_port "$P1"
"$BERTH" logcollect -g "$W/graph" --log-root "$W/logs" -H "unix://$W/none.sock" \
	--forward "tcp://127.0.0.1:$P1" --max-file-size 1G >"$W/logcollect.log" 2>&1 &
LC=$!; pids+=("$LC")
read -r t_lc hwm_lc < <(run_until "$W/sink1" "$LC")
kill "$LC"

# rsyslog imfile -> omfwd (octet-counted TCP, RFC 5424) into an identical sink
P2=$(free_port); S2=$(sink "$W/sink2" "$P2"); pids+=("$S2"); wait_port "$P2"
mkdir -p "$W/imfile"
cat >"$W/imfile/rsyslog.conf" <<CONF
global(workDirectory="$W/imfile" maxMessageSize="64k")
module(load="imfile")
input(type="imfile" File="$W/logs/worker_20261201T000000/MasterLog" Tag="worker" Facility="local0" freshStartTail="off")
*.* action(type="omfwd" target="127.0.0.1" port="$P2" protocol="tcp" TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
           queue.type="LinkedList" queue.size="100000" queue.dequeueBatchSize="1024")
CONF
rsyslogd -n -f "$W/imfile/rsyslog.conf" -i "$W/imfile/pid" >"$W/imfile/out" 2>&1 &
IM=$!; pids+=("$IM")
read -r t_im hwm_im < <(run_until "$W/sink2" "$IM")

rate() { echo "scale=0; $LINES / $1" | bc; }
r_lc=$(rate "$t_lc"); r_im=$(rate "$t_im")
echo "logcollect: $LINES lines of ~100 bytes forwarded over TCP to rsyslog, one run, $(date -u +%F)"
printf '%-34s %14s %14s %10s\n' "" "rsyslog imfile" "berth" "berth/imfile"
printf '%-34s %14s %14s %10s\n' "lines per second" "$r_im" "$r_lc" "$(echo "scale=2; $r_lc / $r_im" | bc)"
printf '%-34s %14s %14s %10s\n' "seconds" "$t_im" "$t_lc" "$(echo "scale=2; $t_lc / $t_im" | bc)"
printf '%-34s %14s %14s %10s\n' "peak RSS of the shipper (MiB)" "$(echo "scale=2; $hwm_im / 1024" | bc)" "$(echo "scale=2; $hwm_lc / 1024" | bc)" "$(echo "scale=2; $hwm_lc / $hwm_im" | bc)"
