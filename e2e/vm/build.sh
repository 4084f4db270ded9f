#!/bin/sh
# build.sh prepares everything the e2e VM needs and caches it:
#
#   $CACHE/vmlinuz            Debian cloud kernel
#   $CACHE/base.cpio          initramfs base: busybox, kernel modules for IPVS,
#                             netfilter, veth, dummy and bridge links and
#                             virtio_net,
#                             real iptables,
#                             iproute2 ip, ipset, ipvsadm, conntrack, and
#                             init.sh as /init
#   $CACHE/manifest           kernel version and the hash of the inputs
#
# CACHE is ${CLUSTERDNS_VM_CACHE:-$HOME/.cache/clusterdns/vm}. The script
# installs qemu-system-x86 when it is missing, downloads the Debian packages
# once (about 32 MB) and rebuilds the base archive only when this script or
# init.sh changed, so a second run takes well under a second.
#
# CLUSTERDNS_VM_KERNEL picks a kernel package version such as
# 6.1.0-56-cloud-amd64; by default the newest 6.1 cloud kernel apt knows about
# is used the first time, and the cached one afterwards.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${CLUSTERDNS_VM_CACHE:-$HOME/.cache/clusterdns/vm}
debs=$cache/debs
mkdir -p "$debs"

log() { echo "vm/build: $*" >&2; }

apt_updated=
apt_update_once() {
	if [ -z "$apt_updated" ]; then
		log "apt-get update"
		apt-get update -qq -o DPkg::Lock::Timeout=300 >&2
		apt_updated=1
	fi
}

# --- qemu -------------------------------------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
	log "installing qemu-system-x86"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends qemu-system-x86 >&2 ||
		{ apt_update_once && apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends qemu-system-x86 >&2; }
fi

# --- kernel version ---------------------------------------------------------
kver=${CLUSTERDNS_VM_KERNEL:-}
if [ -z "$kver" ] && [ -f "$cache/manifest" ]; then
	kver=$(sed -n 's/^KVER=//p' "$cache/manifest")
fi
if [ -z "$kver" ]; then
	newest_kernel() {
		apt-cache pkgnames linux-image-6.1.0- |
			sed -n 's/^linux-image-\(6\.1\.0-[0-9]*-cloud-amd64\)$/\1/p' | sort -V | tail -n 1
	}
	kver=$(newest_kernel)
	if [ -z "$kver" ]; then
		apt_update_once
		kver=$(newest_kernel)
	fi
	[ -n "$kver" ] || { log "no linux-image-6.1.0-*-cloud-amd64 package known to apt"; exit 1; }
fi

# Userland packages: busybox for small tools (the dynamic build: the static
# one runs its own applets ahead of PATH, so `ip` or `timeout sh` would never
# reach iproute2 or dash); dash as /bin/sh like on Debian; iptables with the
# libraries it loads; iproute2 for `ip netns`; ipset, ipvsadm and conntrack so
# tests can inspect what an agent programmed; libc6 for the dynamic loader.
packages="linux-image-$kver busybox dash netbase libc6
iptables libxtables12 libip4tc2 libip6tc2 libnftnl11 libnetfilter-conntrack3 libmnl0 libnfnetlink0
iproute2 libbpf1 libelf1 libbsd0 libcap2 zlib1g libmd0
ipset libipset13 ipvsadm libnl-3-200 libnl-genl-3-200 libpopt0 conntrack"

# --- downloads --------------------------------------------------------------
missing=
for p in $packages; do
	ls "$debs/${p}_"*.deb >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	log "downloading$missing"
	# apt-get download runs as _apt when it can; a private directory it can
	# write to avoids the "unsandboxed" warning and half-written files in $debs.
	tmp=$(mktemp -d)
	chmod 0777 "$tmp"
	# shellcheck disable=SC2086
	(cd "$tmp" && apt-get download -qq $missing >&2) ||
		{ apt_update_once && (cd "$tmp" && apt-get download -qq $missing >&2); }
	mv "$tmp"/*.deb "$debs/"
	rmdir "$tmp"
fi

# --- base initramfs ---------------------------------------------------------
inputs_hash=$( (echo "$kver $packages"; cat "$0" "$here/init.sh") | sha256sum | cut -c1-16)
if [ -f "$cache/manifest" ] && grep -qx "HASH=$inputs_hash" "$cache/manifest" &&
	[ -f "$cache/vmlinuz" ] && [ -f "$cache/base.cpio" ]; then
	log "cached: $cache (kernel $kver)"
	exit 0
fi

log "building base initramfs for $kver"
work=$cache/work
rm -rf "$work"
mkdir -p "$work/root" "$work/stage"
root=$work/root
stage=$work/stage
for p in $packages; do
	for f in "$debs/${p}_"*.deb; do dpkg-deb -x "$f" "$root"; done
done
bb=$root/bin/busybox
mdir=lib/modules/$kver

# Directory skeleton and device nodes the kernel needs before /init runs.
mkdir -p "$stage/bin" "$stage/sbin" "$stage/usr/bin" "$stage/usr/sbin" "$stage/usr/local/bin" \
	"$stage/dev" "$stage/proc" "$stage/sys" "$stage/run" "$stage/tmp" "$stage/etc" \
	"$stage/lib/x86_64-linux-gnu" "$stage/lib64" "$stage/$mdir" "$stage/var"
ln -s ../run "$stage/var/run"
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3

# busybox and one symlink per applet; real tools copied later replace them.
cp "$bb" "$stage/bin/busybox"
"$bb" --list-full | while read -r applet; do
	[ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$stage/$applet"
done

# Kernel modules: all of netfilter (iptables legacy and nft, conntrack, NAT,
# IPVS, ipset), veth, dummy and bridge (the LAN of the proxy lab, loaded on
# demand), the virtio network card (loaded only when a run asks for its one
# forwarded port), plus whatever those depend on.
"$bb" depmod -b "$root" "$kver"
(
	cd "$root/$mdir"
	find kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter \
		kernel/drivers/net/veth.ko kernel/drivers/net/dummy.ko kernel/net/bridge/bridge.ko \
		kernel/drivers/virtio kernel/drivers/net/virtio_net.ko -name '*.ko'
) >"$work/wanted"
# Close over modules.dep: keep adding dependencies until nothing new appears.
while :; do
	sort -u "$work/wanted" >"$work/closure"
	awk -F': *' 'NR==FNR { want[$1] = 1; next }
		($1 in want) { print $1; n = split($2, d, " "); for (i = 1; i <= n; i++) print d[i] }' \
		"$work/closure" "$root/$mdir/modules.dep" | sort -u >"$work/wanted"
	cmp -s "$work/wanted" "$work/closure" && break
done
while read -r m; do
	mkdir -p "$stage/$mdir/$(dirname "$m")"
	cp "$root/$mdir/$m" "$stage/$mdir/$m"
done <"$work/closure"
cp "$root/$mdir/modules.builtin" "$root/$mdir/modules.order" "$stage/$mdir/"
# Drop the module signatures: checking them is RSA arithmetic, slow under
# emulation, and the kernel loads unsigned modules anyway (it only notes a
# taint). A signed module ends with the signature, a 12-byte descriptor whose
# last four bytes are the signature's length (big-endian), and a magic string.
magic="~Module signature appended~"
find "$stage/$mdir" -name '*.ko' | while read -r ko; do
	[ "$(tail -c 28 "$ko" | head -c 27)" = "$magic" ] || continue
	siglen=$(tail -c 32 "$ko" | head -c 4 | od -An -tu1 | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }')
	truncate -s $(($(stat -c %s "$ko") - 28 - 12 - siglen)) "$ko"
done
"$bb" depmod -b "$stage" "$kver"

# Dynamic userland: the loader, every shared library from the packages, and
# the real tools. Copying all libraries is simpler than tracing DT_NEEDED and
# costs a few megabytes.
for d in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu; do
	[ -d "$root/$d" ] || continue
	find "$root/$d" -maxdepth 1 \( -name '*.so' -o -name '*.so.*' \) -exec cp -a {} "$stage/lib/x86_64-linux-gnu/" \;
done
ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$stage/lib64/ld-linux-x86-64.so.2"
mkdir -p "$stage/usr/lib/x86_64-linux-gnu"
cp -a "$root/usr/lib/x86_64-linux-gnu/xtables" "$stage/usr/lib/x86_64-linux-gnu/"
# Packages put their tools in /bin, /sbin or /usr/sbin; the VM gets them all in
# /usr/sbin, which comes before busybox's applets in PATH.
for tool in xtables-legacy-multi xtables-nft-multi ipvsadm ipset ip conntrack; do
	found=
	for d in usr/sbin sbin bin usr/bin; do
		if [ -f "$root/$d/$tool" ] && [ ! -L "$root/$d/$tool" ]; then
			found=$root/$d/$tool
			break
		fi
	done
	[ -n "$found" ] || { log "no $tool in the extracted packages"; exit 1; }
	cp "$found" "$stage/usr/sbin/$tool"
	rm -f "$stage/bin/$tool" "$stage/sbin/$tool" "$stage/usr/bin/$tool"
done
# iptables* names as Debian's alternatives would set them, with the nft
# backend as the default like a stock Debian 12 node.
for fam in iptables ip6tables; do
	for suffix in "" -save -restore; do
		ln -sf xtables-legacy-multi "$stage/usr/sbin/$fam-legacy$suffix"
		ln -sf xtables-nft-multi "$stage/usr/sbin/$fam-nft$suffix"
		ln -sf xtables-nft-multi "$stage/usr/sbin/$fam$suffix"
	done
done
cp "$root/bin/dash" "$stage/bin/dash"
ln -sf dash "$stage/bin/sh"
cp "$root/etc/protocols" "$root/etc/services" "$stage/etc/"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
printf 'root:x:0:\n' >"$stage/etc/group"
install -m 0755 "$here/init.sh" "$stage/init"

# Uncompressed: unpacking gzip under emulation costs the VM about a second of
# every boot, more than reading the larger file costs the host.
(cd "$stage" && find . | "$bb" cpio -o -H newc 2>/dev/null) >"$cache/base.cpio.tmp"
cp "$root/boot/vmlinuz-$kver" "$cache/vmlinuz.tmp"
mv "$cache/base.cpio.tmp" "$cache/base.cpio"
rm -f "$cache/base.cpio.gz"
mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
printf 'KVER=%s\nHASH=%s\n' "$kver" "$inputs_hash" >"$cache/manifest"
rm -rf "$work"
log "built $cache (kernel $kver, base $(du -h "$cache/base.cpio" | cut -f1))"
