# The IPVS mode e2e test, run inside the qemu VM by TestProxyIPVS
# (e2e/proxy_ipvs_test.go), which checks what it prints. The VM's own network
# namespace is the node; three pods and an outside client are network
# namespaces joined to it by veth pairs. Every loop is bounded.
set -u

M=/run/manifests
AGENT_FLAGS="--manifests $M --iptables-variant nft --cluster-cidr 10.100.0.0/16 \
	--healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 -v 4"

fail() {
	echo "FAIL: $*"
	echo "== agent log"
	cat /tmp/agent.log 2>/dev/null | tail -50
	exit 1
}

start=$(date +%s)
# stamp marks how far the script got, for diagnosing a slow run.
stamp() { echo "# $(($(date +%s) - start))s: $*"; }

# wait_for TEXT CMD...: run CMD until its output holds TEXT, for at most 120
# seconds. Polls use ipvsadm: a small program starts fast even under
# emulation.
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

# wait_without TEXT CMD...: run CMD until its output lacks TEXT, at most 120
# seconds.
wait_without() {
	want=$1
	shift
	deadline=$(($(date +%s) + 120))
	while [ "$(date +%s)" -lt $deadline ]; do
		if ! "$@" 2>/dev/null | grep -q -- "$want"; then
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

add_ns client 9
for i in 1 2 3; do
	add_ns "pod$i" "$i"
	ip netns exec "pod$i" podserver -name "10.100.$i.2" -tcp :80 -udp :5353 -lifetime 10m >/dev/null 2>&1 &
done

mkdir -p $M
cp /etc/clusterdns/services.yaml $M/services.yaml
cp /etc/clusterdns/pods-ready.yaml $M/pods.yaml

clusterdns proxy --proxy-mode ipvs $AGENT_FLAGS >/tmp/agent.log 2>&1 &
agent=$!
wait_for "10.100.3.2:80" ipvsadm -Ln || fail "the agent never programmed the table"
wait_for "persistent" ipvsadm -Ln || fail "no persistent virtual server"
wait_for "192.0.2.50:80" ipvsadm -Ln || fail "no virtual server on the load balancer IP"
wait_for '"lastUpdated"' vmprobe dial -addr 127.0.0.1:10256 -timeout 1s || true

stamp "agent synced"
echo "== list"
clusterdns proxy --list
echo "== ipvsadm"
ipvsadm -Ln
echo "== link"
ip -br addr show cdns-ipvs0
echo "== sysctl"
for k in net/ipv4/vs/conntrack net/ipv4/vs/expire_nodest_conn net/ipv4/vs/expire_quiescent_template net/ipv4/ip_forward; do
	echo "$k=$(cat /proc/sys/$k)"
done
echo "== explain"
clusterdns explain -o json --manifests $M web.e2e
echo "== traffic"
ip netns exec client vmprobe spread -net tcp -addr 10.96.0.10:80 -n 30
ip netns exec client vmprobe spread -net udp -addr 10.96.0.10:53 -n 30
ip netns exec client vmprobe spread -net tcp -addr 10.100.9.1:30080 -n 30
ip netns exec client vmprobe spread -net udp -addr 10.100.9.1:30053 -n 30
ip netns exec client vmprobe spread -net tcp -addr 10.96.0.11:80 -n 20
echo "== hairpin"
ip netns exec pod1 vmprobe spread -net tcp -addr 10.96.0.10:80 -n 30
echo "== filter"
ip netns exec client vmprobe dial -addr 10.96.0.10:22 -expect-refused -timeout 5s

echo "== source range allowed"
ip netns exec client vmprobe dial -addr 192.0.2.50:80 -timeout 10s 2>&1
echo "== source range denied"
ip netns exec pod1 vmprobe dial -addr 192.0.2.50:80 -timeout 3s 2>&1
echo "exit $?"
stamp "traffic checked"
# pod3 turns unready: the manifests folder changes as a ConfigMap update
# would, atomically.
cp /etc/clusterdns/pods-unready.yaml $M/.pods.tmp && mv $M/.pods.tmp $M/pods.yaml
wait_without "10.100.3.2:53" ipvsadm -Ln || fail "pod3 stayed in the UDP virtual server"
wait_for "10.100.3.2:80 *Masq *0 " ipvsadm -Ln || fail "pod3 was not set to weight 0"
stamp "pod3 out"
echo "== unready list"
clusterdns proxy --list
echo "== explain unready"
clusterdns explain -o json --manifests $M web.e2e
echo "== unready traffic"
ip netns exec client vmprobe spread -net tcp -addr 10.96.0.10:80 -n 30
ip netns exec client vmprobe spread -net udp -addr 10.96.0.10:53 -n 30
ip netns exec client vmprobe spread -net tcp -addr 10.100.9.1:30080 -n 30

kill $agent
wait $agent
stamp "agent stopped"
# With the agent gone, pod3 turns ready again: the table is now stale.
cp /etc/clusterdns/pods-ready.yaml $M/.pods.tmp && mv $M/.pods.tmp $M/pods.yaml
echo "== explain stale"
clusterdns explain -o json --manifests $M web.e2e
echo "== iptables before cleanup"
iptables-nft-save | grep -c -- '-j CDNS-IPVS-'
clusterdns proxy --cleanup --iptables-variant nft >>/tmp/agent.log 2>&1 || fail "cleanup failed"
echo "== after cleanup"
ipvsadm -Ln
ip link show cdns-ipvs0 >/dev/null 2>&1 && echo "link cdns-ipvs0 present"
echo "sets: $(ipset list -n | grep -c CDNS)"
echo "rules: $(iptables-nft-save | grep -c CDNS)"

stamp "cleaned up"
# Mode switch: IPVS leaves its state, then iptables mode starts and removes
# it; --cleanup then removes iptables mode's rules.
clusterdns proxy --proxy-mode ipvs $AGENT_FLAGS >/tmp/agent.log 2>&1 &
agent=$!
wait_for "10.100.2.2:53" ipvsadm -Ln || fail "the second IPVS agent never programmed the table"
kill $agent
wait $agent
clusterdns proxy --proxy-mode iptables $AGENT_FLAGS >/tmp/agent.log 2>&1 &
agent=$!
wait_for "CDNS-SVC-" iptables-nft-save -t nat || fail "iptables mode never programmed its rules"
kill $agent
wait $agent
echo "== after switch to iptables"
ipvsadm -Ln
ip link show cdns-ipvs0 >/dev/null 2>&1 && echo "link cdns-ipvs0 present"
echo "sets: $(ipset list -n | grep -c CDNS)"
echo "ipvs rules: $(iptables-nft-save | grep -c CDNS-IPVS)"
echo "iptables rules: $(iptables-nft-save | grep -c CDNS-SVC)"
clusterdns proxy --cleanup --iptables-variant nft >>/tmp/agent.log 2>&1 || fail "second cleanup failed"
echo "== after second cleanup"
echo "rules: $(iptables-nft-save | grep -c CDNS)"
stamp "done"
echo "== done"
