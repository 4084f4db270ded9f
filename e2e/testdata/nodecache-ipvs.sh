# The node-local cache beside an IPVS-mode agent, run inside the qemu VM by
# TestNodecacheIPVS (e2e/nodecache_ipvs_test.go), which checks what it
# prints. The VM's own namespace is the node; the DNS pod and a client pod
# are network namespaces joined to it by veth pairs. As NodeLocal does in
# IPVS mode, the cache holds only the link-local address: IPVS owns the
# kube-dns ClusterIP. Every loop is bounded.
set -u

M=/run/manifests
W=web.default.svc.cluster.local

fail() {
	echo "FAIL: $*"
	for f in agent cache serve; do
		echo "== $f log"
		tail -30 /tmp/$f.log 2>/dev/null
	done
	exit 1
}

start=$(date +%s)
stamp() { echo "# $(($(date +%s) - start))s: $*"; }

# wait_for TEXT CMD...: run CMD until its output holds TEXT, at most 120 s.
wait_for() {
	want=$1
	shift
	deadline=$(($(date +%s) + 120))
	while [ "$(date +%s)" -lt $deadline ]; do
		if "$@" 2>/dev/null | grep -q -- "$want"; then
			return 0
		fi
		sleep 0.2
	done
	return 1
}

add_ns() { # name index: 10.100.INDEX.2 in the namespace, .1 on the node
	ip netns add "$1"
	ip link add "veth-$1" type veth peer name eth0 netns "$1"
	ip addr add "10.100.$2.1/24" dev "veth-$1"
	ip link set "veth-$1" up
	ip -n "$1" link set lo up
	ip -n "$1" addr add "10.100.$2.2/24" dev eth0
	ip -n "$1" link set eth0 up
	ip -n "$1" route add default via "10.100.$2.1"
}

echo 1 >/proc/sys/net/ipv4/ip_forward
add_ns dnspod 1
add_ns client 9
mkdir -p $M
cp /etc/clusterdns/objects.yaml $M/objects.yaml
ip netns exec dnspod clusterdns serve --conf /etc/clusterdns/serve.Corefile >/tmp/serve.log 2>&1 &

clusterdns proxy --proxy-mode ipvs --manifests $M --iptables-variant nft --cluster-cidr 10.100.0.0/16 \
	--healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 >/tmp/agent.log 2>&1 &
wait_for "10.100.1.2:53" ipvsadm -Ln || fail "the agent never programmed kube-dns"
ip netns exec client vmprobe dns -addr 10.96.0.10:53 -name $W -timeout 60s >/dev/null || fail "kube-dns does not answer through IPVS"
stamp "agent and DNS pod"

KUBE_DNS_UPSTREAM_SERVICE_HOST=10.96.0.11 clusterdns nodecache -localip 169.254.20.10 \
	-basecorefile /etc/clusterdns/Corefile.base -conf /tmp/Corefile -upstreamsvc kube-dns-upstream \
	-resolv-conf /etc/clusterdns/resolv.conf -rules iptables -syncinterval 1 >/tmp/cache.log 2>&1 &
cache=$!
wait_for "serving" cat /tmp/cache.log || fail "the cache never served"
stamp "cache"

conntrack -F >/dev/null 2>&1
echo "== queries"
for net in udp tcp; do
	ip netns exec client vmprobe dns -net $net -addr 169.254.20.10:53 -name $W 2>&1
	ip netns exec client vmprobe dns -net $net -addr 10.96.0.10:53 -name $W 2>&1
done
echo "== conntrack"
conntrack -L 2>/dev/null
echo "== link"
ip -d link show nodelocaldns
echo "== ipvsadm"
ipvsadm -Ln
echo "== refused"
clusterdns proxy --proxy-mode ipvs --manifests $M --node-local-dns 169.254.20.10 --dry-run 2>&1
stamp "checked"

kill $cache
wait $cache
echo "== after stop"
ip link show nodelocaldns >/dev/null 2>&1 && echo "link nodelocaldns present"
echo "rules: $(iptables-save | grep -c CLUSTERDNS-NODECACHE)"
ip netns exec client vmprobe dns -addr 10.96.0.10:53 -name $W 2>&1
stamp "done"
echo "== done"
