#!/bin/sh
# Installs the system tools the tests use, when they are missing: dig, iptables, nft
# and conntrack, ip (netns, veth), etcd for the real kube-apiserver, and qemu
# for the IPVS tests on a booted kernel. Debian packages only; run as root.
set -eu

need=""
have() { command -v "$1" >/dev/null 2>&1; }
have dig || need="$need dnsutils"
have iptables-restore || need="$need iptables"
have conntrack || need="$need conntrack"
have nft || need="$need nftables"
have ip || need="$need iproute2"
have etcd || [ -x /usr/bin/etcd ] || need="$need etcd-server"
have qemu-system-x86_64 || need="$need qemu-system-x86"
have cpio || need="$need cpio"

if [ -n "$need" ]; then
	echo "install-deps: installing$need" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
# Debian's etcd-server package starts a system etcd; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop etcd >/dev/null 2>&1 || true; fi
