#!/bin/sh
# /init of the e2e VM. It prepares a minimal node (proc, sys, dev, lo up,
# modules for IPVS, netfilter, veth and dummy links), runs /test.sh and reports
# its output and exit status on the console between lines carrying the token
# from the kernel command line, so the host can tell them apart from kernel
# messages. Then it powers the VM off; it never returns.
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /root /run/netns
# Only emergencies on the console: the result section must stay readable.
echo 1 >/proc/sys/kernel/printk

token=none
net=
timeout=600
for arg in $(cat /proc/cmdline); do
	case $arg in
	clusterdns.token=*) token=${arg#clusterdns.token=} ;;
	clusterdns.timeout=*) timeout=${arg#clusterdns.timeout=} ;;
	clusterdns.net=*) net=${arg#clusterdns.net=} ;;
	esac
done

# lo must be up before IPVS accepts real servers.
ip link set lo up

# Load up front what a kube-proxy-like agent needs; the rest of netfilter is
# in /lib/modules and loads on demand through modprobe. One modprobe for all
# is much faster under emulation than one per module.
modules="nf_conntrack nf_nat nf_tables nft_compat nft_chain_nat nft_ct nft_nat nft_masq \
	ip_tables iptable_filter iptable_nat iptable_mangle iptable_raw \
	ip6_tables ip6table_filter ip6table_nat ip6table_mangle \
	x_tables xt_comment xt_mark xt_addrtype xt_conntrack xt_statistic xt_recent xt_set \
	xt_MASQUERADE xt_nat xt_tcpudp xt_multiport xt_physdev xt_ipvs \
	ip_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip ip_set_hash_ipportnet \
	ip_set_hash_net ip_set_bitmap_port \
	ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh ip_vs_lc ip_vs_dh ip_vs_sed ip_vs_nq ip_vs_mh \
	veth dummy"
# shellcheck disable=SC2086
modprobe -a $modules 2>/dev/null
for m in $modules; do
	[ -d "/sys/module/$m" ] || echo "vm-init: module $m did not load" >&2
done

# Only when the host gave the VM its one forwarded port (Spec.Forward): the
# virtio card, with the address qemu's user network expects and no default
# route, so the forward's address (in the same /24) is all it can reach.
if [ -n "$net" ]; then
	modprobe -a virtio_pci virtio_net 2>/dev/null
	i=0
	while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	ip addr add "$net" dev eth0 && ip link set eth0 up || echo "vm-init: no network card for $net" >&2
fi

cd /
echo "VM-RESULT-BEGIN $token"
if [ -f /test.sh ]; then
	# The host kills qemu after its timeout; stopping the script here too
	# keeps the VM bounded even if the host side went away.
	timeout -s KILL "$timeout" /bin/sh /test.sh </dev/null 2>&1
	rc=$?
	[ $rc -eq 137 ] && echo "vm-init: /test.sh killed after ${timeout}s"
else
	echo "vm-init: no /test.sh"
	rc=127
fi
echo "VM-RESULT-END $token"
echo "VM-EXIT $token $rc"
sync
poweroff -f
# poweroff -f does not return; if it does, panic so qemu (-no-reboot) exits.
echo o >/proc/sysrq-trigger
