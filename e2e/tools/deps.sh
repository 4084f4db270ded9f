#!/usr/bin/env bash
# Installs what the Kubernetes end-to-end tests need: etcd from Debian's
# packages (when it is not in PATH yet) and kube-apiserver built by build.sh.
# Run it as root before `go test ./e2e/...`; it is quick when both are there.
# The first build takes 10-20 minutes on 2 cores.
set -euo pipefail

tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v etcd >/dev/null 2>&1; then
	echo "deps.sh: installing etcd-server" >&2
	apt-get update >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server >&2
	# The package starts a system etcd on the default ports; the tests run
	# their own on free ports, so stop it where a service manager runs it.
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now etcd >/dev/null 2>&1 || true
	fi
fi
"$tools_dir/build.sh" "$@"
