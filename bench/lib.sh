# Shared by the benchmark scripts: a work dir cleaned on exit, a throw-away CA and
# server certificate for localhost, free ports, and timing helpers.
# Source it after `set -euo pipefail`; it sets W (work dir) and PIDS (killed on exit).

W=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

# make_pki: ca.crt, server.crt, server.key (localhost, 127.0.0.1) and certs/ca.crt in $W
make_pki() {
	( cd "$W"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=bench-ca \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
	openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 30 -extfile ext.cnf 2>/dev/null
	mkdir -p certs && cp ca.crt certs/ )
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_https PORT: until the server answers on /v2/
wait_https() { for _ in $(seq 100); do curl -s --cacert "$W/ca.crt" "https://localhost:$1/v2/" -o /dev/null && return 0; sleep 0.1; done; return 1; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
# ratio A B: A/B to two places (n/a when B is 0)
ratio() { python3 -c "a,b=$1,$2; print(f'{a/b:.2f}' if b else 'n/a')"; }
# peak_mib PID: the process's peak RSS so far (VmHWM), MiB
peak_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# make_image DIR: an OCI layout (tag v1) of one fresh random layer of SIZE_MIB
# MiB, so every round really uploads; DIR/LAYER names the layer.
make_image() {
	local d=$1 LD LS CD CS MD MS
	rm -rf "$d"; mkdir -p "$d/blobs/sha256"
	# gzip'd so skopeo keeps the layer as it is (it would compress a plain tar on push)
	head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom | gzip -1 >"$d/layer"
	LD=$(sha256sum "$d/layer" | cut -d' ' -f1); mv "$d/layer" "$d/blobs/sha256/$LD"
	LS=$(stat -c %s "$d/blobs/sha256/$LD")
	printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$LD" >"$d/cfg"
	CD=$(sha256sum "$d/cfg" | cut -d' ' -f1); CS=$(stat -c %s "$d/cfg"); mv "$d/cfg" "$d/blobs/sha256/$CD"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' "$CD" "$CS" "$LD" "$LS" >"$d/man"
	MD=$(sha256sum "$d/man" | cut -d' ' -f1); MS=$(stat -c %s "$d/man"); mv "$d/man" "$d/blobs/sha256/$MD"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' "$MD" "$MS" >"$d/index.json"
	echo "$LD" >"$d/LAYER"
}
