# Smoke test of the VM's kernel: a client namespace reaches two pod namespaces
# through an IPVS virtual service on the node (the VM's own namespace), and
# iptables-restore loads a kube-proxy-like nat table with both backends.
set -eu

# node <-> client and node <-> pod-a/pod-b, one veth pair each.
ip netns add client
ip link add veth-client type veth peer name eth0 netns client
ip addr add 10.100.1.1/24 dev veth-client
ip link set veth-client up
ip -n client link set lo up
ip -n client addr add 10.100.1.2/24 dev eth0
ip -n client link set eth0 up
ip -n client route add default via 10.100.1.1
i=2
for pod in pod-a pod-b; do
	ip netns add $pod
	ip link add veth-$pod type veth peer name eth0 netns $pod
	ip addr add 10.100.$i.1/24 dev veth-$pod
	ip link set veth-$pod up
	ip -n $pod link set lo up
	ip -n $pod addr add 10.100.$i.2/24 dev eth0
	ip -n $pod link set eth0 up
	ip -n $pod route add default via 10.100.$i.1
	ip netns exec $pod vmprobe serve -listen 10.100.$i.2:8080 -name $pod -for 60s &
	i=$((i + 1))
done
sysctl -qw net.ipv4.ip_forward=1

vmprobe ipvs -link kube-ipvs0 -vip 10.96.0.10 -port 80 -real 10.100.2.2:8080 -real 10.100.3.2:8080
ip -br addr show kube-ipvs0

# Round robin over two real servers: four connections reach both.
for n in 1 2 3 4; do
	ip netns exec client vmprobe dial -addr 10.96.0.10:80 -timeout 20s
done
# A port without a virtual service is refused by the node itself.
ip netns exec client vmprobe dial -addr 10.96.0.10:81 -expect-refused -timeout 5s
ipvsadm -Ln

for mode in nft legacy; do
	iptables-$mode-restore <<'RULES'
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MASQUERADE
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m addrtype --dst-type LOCAL -m statistic --mode random --probability 0.5 -j KUBE-MARK-MASQ
COMMIT
RULES
	echo "iptables-$mode nat KUBE-SERVICES rules: $(iptables-$mode-save -t nat | grep -c '^-A KUBE-SERVICES')"
done
