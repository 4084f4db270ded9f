#!/usr/bin/env bash
# Builds the Kubernetes binaries the end-to-end tests run (kube-apiserver by
# default; pass other tool names such as kube-proxy as arguments) from the
# pinned k8s.io/kubernetes release in this module, into a cache directory.
# Prints the path of each binary, one per line. Cheap when nothing changed: a
# binary built from the same go.mod, go.sum and build.sh (recorded in a stamp
# file beside it) is kept as it is, and otherwise go's build cache does most of the work.
set -euo pipefail

tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin_dir="${CLUSTERDNS_BIN_CACHE:-${HOME:-/root}/.cache/clusterdns/bin}"
mkdir -p "$bin_dir"

# Stamp the release into the binaries, as Kubernetes' own build does, so that
# /version and --version report it instead of v0.0.0-master.
k8s_version="$(grep -Eo 'k8s\.io/kubernetes v[0-9][^ ]*' "$tools_dir/go.mod" | head -n1 | cut -d' ' -f2)"
if [ -z "$k8s_version" ]; then
	echo "build.sh: no k8s.io/kubernetes version in $tools_dir/go.mod" >&2
	exit 1
fi
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
pkg=k8s.io/component-base/version
ldflags="-s -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"

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
	stamp="$(cat "$tools_dir/go.mod" "$tools_dir/go.sum" "$tools_dir/build.sh" | sha256sum | cut -d' ' -f1)"
	if [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
		echo "$out"
		continue
	fi
	# Build to a temporary name and rename, so a concurrent reader never sees
	# a half-written binary.
	tmp="$out.tmp.$$"
	CGO_ENABLED=0 go build -C "$tools_dir" -trimpath -ldflags="$ldflags" -o "$tmp" "k8s.io/kubernetes/cmd/$name" >&2
	mv -f "$tmp" "$out"
	echo "$stamp" >"$out.stamp"
	echo "$out"
done
