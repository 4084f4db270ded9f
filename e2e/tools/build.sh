#!/usr/bin/env bash
# Builds the Kubernetes binaries the end-to-end tests run (kube-apiserver by
# default; pass other tool names such as kube-proxy as arguments) from the
# pinned k8s.io/kubernetes release in this module, into a cache directory.
# Prints the path of each binary, one per line. Cheap when nothing changed: a
# binary built from the same go.mod and go.sum (recorded in a stamp file beside
# it) is kept as it is, and otherwise go's build cache does most of the work.
set -euo pipefail

tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin_dir="${CLUSTERDNS_BIN_CACHE:-${HOME:-/root}/.cache/clusterdns/bin}"
mkdir -p "$bin_dir"

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
	names=(kube-apiserver)
fi

for name in "${names[@]}"; do
	case "$name" in
	kube-apiserver | kube-proxy) ;;
	*)
		echo "build.sh: unknown tool $name (want kube-apiserver or kube-proxy)" >&2
		exit 2
		;;
	esac
	out="$bin_dir/$name"
	stamp="$(cat "$tools_dir/go.mod" "$tools_dir/go.sum" | sha256sum | cut -d' ' -f1)"
	if [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
		echo "$out"
		continue
	fi
	# Build to a temporary name and rename, so a concurrent reader never sees
	# a half-written binary.
	tmp="$out.tmp.$$"
	CGO_ENABLED=0 go build -C "$tools_dir" -trimpath -ldflags=-s -o "$tmp" "k8s.io/kubernetes/cmd/$name" >&2
	mv -f "$tmp" "$out"
	echo "$stamp" >"$out.stamp"
	echo "$out"
done
