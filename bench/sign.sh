#!/usr/bin/env bash
# Signing and verifying N manifests: berth (rPGP, Ed25519 and RSA-2048 keys)
# against skopeo standalone-sign / standalone-verify (GnuPG through gpgme, the
# same RSA-2048 key), in one run. Each tool runs once per signature, as a
# site's scripts call them; the time per signature and the ratios are printed.
# Usage: bench/sign.sh [N]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
BERTH=${BERTH:-$PWD/dist/berth}
[ -x "$BERTH" ] || { echo "build first: make static" >&2; exit 1; }
for t in skopeo gpg python3; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
W=$(mktemp -d /tmp/berth-bench-sign.XXXXXX)
trap 'gpgconf --homedir "$W/gnupg" --kill all 2>/dev/null || true; rm -rf "$W"' EXIT
export GNUPGHOME=$W/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --passphrase '' --quick-gen-key "Bench <bench@example.org>" rsa2048 sign never 2>/dev/null
FPR=$(gpg --with-colons --list-keys 2>/dev/null | awk -F: '/^fpr:/{print $10; exit}')
gpg --batch --pinentry-mode loopback --passphrase '' --export-secret-keys --armor "$FPR" >"$W/rsa.asc"
gpg --batch --export "$FPR" >"$W/rsa.gpg"
"$BERTH" sign --generate-key Bench bench@example.org --key "$W/ed.asc" >/dev/null
# N distinct manifests
python3 - "$W/m" "$N" <<'PY'
import hashlib, json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
for i in range(n):
    cfg = hashlib.sha256(b"config %d" % i).hexdigest()
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cfg, "size": 100 + i},
         "layers": []}
    open(os.path.join(d, "%d.json" % i), "w").write(json.dumps(m))
PY
REF=reg.example.org:5000/site/worker:1
now() { date +%s.%N; }
run() { # LABEL COMMAND-TEMPLATE (with @i@) -> seconds
	local t0 t1 i
	t0=$(now)
	for ((i = 0; i < N; i++)); do eval "${2//@i@/$i}" >/dev/null; done
	t1=$(now)
	python3 -c "print(f'{$t1-$t0:.3f}')"
}
mkdir -p "$W/s-sk" "$W/s-rsa" "$W/s-ed"
sk_sign=$(run skopeo "skopeo standalone-sign $W/m/@i@.json $REF $FPR -o $W/s-sk/@i@")
b_rsa_sign=$(run berth-rsa "$BERTH sign --key $W/rsa.asc --manifest $W/m/@i@.json -o $W/s-rsa/@i@ $REF")
b_ed_sign=$(run berth-ed "$BERTH sign --key $W/ed.asc --manifest $W/m/@i@.json -o $W/s-ed/@i@ $REF")
sk_verify=$(run skopeo "skopeo standalone-verify $W/m/@i@.json $REF $FPR $W/s-sk/@i@")
b_rsa_verify=$(run berth-rsa "$BERTH verify --signature $W/s-rsa/@i@ --manifest $W/m/@i@.json --keyring $W/rsa.gpg $REF")
b_ed_verify=$(run berth-ed "$BERTH verify --signature $W/s-ed/@i@ --manifest $W/m/@i@.json --keyring $W/ed.asc.pub $REF")
# berth must verify GnuPG's signatures too (same keyring): a sample, not timed
for i in 0 $((N / 2)) $((N - 1)); do
	"$BERTH" verify --signature "$W/s-sk/$i" --manifest "$W/m/$i.json" --keyring "$W/rsa.gpg" "$REF" >/dev/null
done
python3 - "$N" "$sk_sign" "$b_rsa_sign" "$b_ed_sign" "$sk_verify" "$b_rsa_verify" "$b_ed_verify" <<'PY'
import sys
n = int(sys.argv[1]); sk_s, br_s, be_s, sk_v, br_v, be_v = map(float, sys.argv[2:])
ms = lambda t: 1000 * t / n
print(f"{n} manifests, one process per signature")
print(f"{'':28}{'ms/signature':>14}{'ratio to skopeo':>18}")
for name, t, base in [("skopeo standalone-sign", sk_s, sk_s), ("berth sign (RSA-2048)", br_s, sk_s),
                      ("berth sign (Ed25519)", be_s, sk_s), ("skopeo standalone-verify", sk_v, sk_v),
                      ("berth verify (RSA-2048)", br_v, sk_v), ("berth verify (Ed25519)", be_v, sk_v)]:
    print(f"{name:28}{ms(t):14.2f}{base / t:17.2f}x")
PY
