#!/bin/sh
# Installs what the peer benchmark needs beyond the e2e tests' own tools
# (e2e/install-deps.sh: iproute2, iptables, etcd): dnsperf, taskset from
# util-linux, and nft (nftables) for the rules part's nftables mode. Debian
# packages only; run as root. Quick when all three are there.
set -eu

need=""
command -v dnsperf >/dev/null 2>&1 || need="$need dnsperf"
command -v taskset >/dev/null 2>&1 || need="$need util-linux"
command -v nft >/dev/null 2>&1 || need="$need nftables"
if [ -n "$need" ]; then
	echo "bench install-deps: installing$need" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
