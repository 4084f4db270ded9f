package nodelocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Runner runs the rule tools. ExecRunner runs them; tests record calls.
type Runner interface {
	// Run runs name with args and stdin (nil for none), returning an error
	// that carries the tool's stderr.
	Run(ctx context.Context, stdin []byte, name string, args ...string) error
}

// ExecRunner runs the real iptables and nft tools.
type ExecRunner struct{}

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Links manages the interface that holds the local addresses.
type Links interface {
	// Ensure creates the link if it is missing, brings it up and makes sure
	// it holds every address in ips. It returns the link's kind.
	Ensure(name string, ips []netip.Addr) (kind string, err error)
	// Delete removes the link; a missing link is not an error.
	Delete(name string) error
}

// linkKinds are tried in order when the link has to be created. A dummy
// link is what NodeLocal DNSCache uses: a device that holds addresses and
// never carries a packet. Kernels built without CONFIG_DUMMY (this project's
// CI VM is one) refuse it, and ifb is the nearest stand-in: also a single
// device with no peer and nowhere to send packets unless a tc redirect
// points at it, so the addresses only ever get local delivery. A veth pair
// would work too but leaves a second device to own and clean up, a bridge
// without ports shows NO-CARRIER and invites enslaving, and putting the
// addresses on lo would leave nothing of our own to delete on teardown.
var linkKinds = []string{"dummy", "ifb"}

// NetlinkLinks is Links over rtnetlink, in the caller's network namespace.
type NetlinkLinks struct{}

// Ensure implements Links.
func (NetlinkLinks) Ensure(name string, ips []netip.Addr) (string, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return "", fmt.Errorf("link %s: %w", name, err)
		}
		link, err = createLink(name)
		if err != nil {
			return "", err
		}
	}
	if kind := link.Type(); !ownedKind(kind) {
		return "", fmt.Errorf("link %s exists and is a %s link, not one of ours (%s)", name, kind, strings.Join(linkKinds, ", "))
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return "", fmt.Errorf("link %s: list addresses: %w", name, err)
	}
	for _, ip := range ips {
		if hasAddr(have, ip) {
			continue
		}
		bits := 32
		if ip.Is6() {
			bits = 128
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
		if ip.Is6() {
			// DAD would hold the address "tentative" and unbindable for a
			// second or more; nothing else may own it on a link of ours.
			addr.Flags = syscall.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return "", fmt.Errorf("link %s: add %v: %w", name, ip, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("link %s: set up: %w", name, err)
	}
	return link.Type(), nil
}

func createLink(name string) (netlink.Link, error) {
	var errs []error
	for _, kind := range linkKinds {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		var link netlink.Link
		switch kind {
		case "dummy":
			link = &netlink.Dummy{LinkAttrs: attrs}
		case "ifb":
			link = &netlink.Ifb{LinkAttrs: attrs}
		}
		err := netlink.LinkAdd(link)
		if err == nil {
			return netlink.LinkByName(name)
		}
		errs = append(errs, fmt.Errorf("add %s link %s: %w", kind, name, err))
	}
	return nil, errors.Join(errs...)
}

func ownedKind(kind string) bool {
	for _, k := range linkKinds {
		if k == kind {
			return true
		}
	}
	return false
}

func hasAddr(have []netlink.Addr, ip netip.Addr) bool {
	for _, a := range have {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true
		}
	}
	return false
}

// Delete implements Links. It refuses to delete a link of a kind we never
// create, so a mistaken -interfacename cannot take down eth0.
func (NetlinkLinks) Delete(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("link %s: %w", name, err)
	}
	if !ownedKind(link.Type()) {
		return fmt.Errorf("link %s is a %s link, not one of ours: left alone", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// LeaseSets keeps the ipset that holds the lease of the node's own queries
// in iptables mode (see Config.FollowSocket). NetlinkSets is the real one.
type LeaseSets interface {
	// Ensure creates the set, with entries that time out, if it is missing.
	Ensure(name string, ipv6 bool) error
	// Renew adds ips or restarts their timeout at ttl.
	Renew(name string, ips []netip.Addr, ttl time.Duration) error
	// Clear empties the set; a missing set is not an error.
	Clear(name string) error
	// Destroy removes the set; a missing set is not an error.
	Destroy(name string) error
}

// NetlinkSets is LeaseSets over the ipset netlink protocol, in the caller's
// network namespace.
type NetlinkSets struct{}

// Ensure implements LeaseSets.
func (NetlinkSets) Ensure(name string, ipv6 bool) error {
	family := uint8(unix.NFPROTO_IPV4)
	if ipv6 {
		family = unix.NFPROTO_IPV6
	}
	if _, err := netlink.IpsetList(name); err == nil {
		return nil
	}
	timeout := uint32(1)
	err := netlink.IpsetCreate(name, "hash:ip", netlink.IpsetCreateOptions{Family: family, Timeout: &timeout})
	var exists nl.IPSetError
	if err != nil && !(errors.As(err, &exists) && exists == nl.IPSET_ERR_EXIST) {
		return fmt.Errorf("ipset %s: create: %w", name, err)
	}
	return nil
}

// Renew implements LeaseSets; ttl is rounded up to whole seconds.
func (NetlinkSets) Renew(name string, ips []netip.Addr, ttl time.Duration) error {
	secs := uint32((ttl + time.Second - 1) / time.Second)
	for _, ip := range ips {
		if err := netlink.IpsetAdd(name, &netlink.IPSetEntry{IP: ip.AsSlice(), Timeout: &secs, Replace: true}); err != nil {
			return fmt.Errorf("ipset %s: add %v: %w", name, ip, err)
		}
	}
	return nil
}

// Clear implements LeaseSets.
func (NetlinkSets) Clear(name string) error {
	if err := netlink.IpsetFlush(name); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("ipset %s: flush: %w", name, err)
	}
	return nil
}

// Destroy implements LeaseSets.
func (NetlinkSets) Destroy(name string) error {
	if err := netlink.IpsetDestroy(name); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("ipset %s: destroy: %w", name, err)
	}
	return nil
}
