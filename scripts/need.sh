#!/bin/sh
# Install what a fresh Debian 12 root machine lacks for a make target:
#   need.sh build   musl toolchain and the musl Rust target
#   need.sh test    + the peers the tests drive (skopeo, Distribution, openssl, ...)
#   need.sh bench   + the benchmark tools and anchors (wrk, hyperfine, ...)
# Already-present tools cost nothing; nothing is installed if all are there.
set -eu
what=${1:-build}

pkgs=""
want() { # want COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || pkgs="$pkgs $2"
}

want musl-gcc musl-tools
want curl curl
if [ "$what" = test ] || [ "$what" = bench ]; then
	want skopeo skopeo
	want docker-registry docker-registry
	want openssl openssl
	want busybox busybox-static
	want unshare util-linux
	want ip iproute2
	want setpriv util-linux
	want python3 python3
	want nsenter util-linux
	want debootstrap debootstrap
	want dockerd docker.io
	want systemd-analyze systemd
	want rsyslogd rsyslog
	[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || pkgs="$pkgs rsyslog-gnutls"
fi
if [ "$what" = bench ]; then
	want wrk wrk
	want hyperfine hyperfine
	want dumb-init dumb-init
	want tini tini
	want pigz pigz
	want bc bc
	want rsyslogd rsyslog
fi

if [ -n "$pkgs" ]; then
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		echo "missing:$pkgs — install these packages (Debian names) and retry" >&2
		exit 1
	fi
	echo "installing:$pkgs" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq $pkgs >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $pkgs; }
fi

# Ansible with the community.docker collection (pip's ansible package carries
# it) and the docker SDK, for the site's playbook test; in a virtualenv of its
# own, as pip on Debian 12 installs nothing system-wide.
ANSIBLE_VENV=${BERTH_ANSIBLE_VENV:-/opt/berth-ansible}
if [ "$what" = test ] && [ ! -x "$ANSIBLE_VENV/bin/ansible-playbook" ]; then
	command -v python3 >/dev/null 2>&1 && python3 -m venv --help >/dev/null 2>&1 ||
		apt-get install -y -qq python3-venv >/dev/null
	echo "installing: ansible, docker (pip) into $ANSIBLE_VENV" >&2
	python3 -m venv "$ANSIBLE_VENV"
	"$ANSIBLE_VENV/bin/pip" install -q ansible docker
fi

if command -v rustup >/dev/null 2>&1; then
	rustup target list --installed | grep -qx x86_64-unknown-linux-musl ||
		rustup target add x86_64-unknown-linux-musl
fi
