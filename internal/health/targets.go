package health

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"github.com/dister/dister/internal/errs"
)

// TargetPolicy is what a prober may connect to. It is applied at dial time
// to the address actually connected (after name resolution, so a name that
// resolves somewhere else later cannot slip past it). nil = the default:
// everything but link-local addresses (169.254.0.0/16 and fe80::/10, where
// cloud metadata services answer).
type TargetPolicy struct {
	nets  []netip.Prefix
	hosts map[string]bool // lower-case names allowed whatever they resolve to
}

var linkLocal = []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10")}

// ParseTargets parses a list of CIDRs, IP addresses and host names into a
// policy allowing exactly those; an empty list is nil (the default).
// Errors wrap errs.Invalid.
func ParseTargets(list []string) (*TargetPolicy, error) {
	if len(list) == 0 {
		return nil, nil
	}
	p := &TargetPolicy{hosts: map[string]bool{}}
	for _, s := range list {
		s = strings.TrimSpace(s)
		switch {
		case strings.Contains(s, "/"):
			pr, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("check target %q is not a CIDR: %w", s, errs.Invalid)
			}
			p.nets = append(p.nets, pr.Masked())
		default:
			if ip, err := netip.ParseAddr(s); err == nil {
				p.nets = append(p.nets, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			if !validHostName(s) {
				return nil, fmt.Errorf("check target %q is neither a CIDR, an IP address nor a host name: %w", s, errs.Invalid)
			}
			p.hosts[strings.ToLower(strings.TrimSuffix(s, "."))] = true
		}
	}
	return p, nil
}

func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '.' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// hostAllowed tells whether host is named in the policy.
func (p *TargetPolicy) hostAllowed(host string) bool {
	return p != nil && p.hosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// allowIP tells whether the policy lets a probe connect to ip.
func (p *TargetPolicy) allowIP(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if p == nil {
		for _, pr := range linkLocal {
			if pr.Contains(ip) {
				return false
			}
		}
		return true
	}
	for _, pr := range p.nets {
		if pr.Contains(ip) {
			return true
		}
	}
	return false
}

// dial connects for a probe under the prober's policy: a host the policy
// names is dialled as it is; any other connection is checked against the
// policy once the address is resolved, just before connecting.
func (p *Prober) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("%s connections are not allowed for checks", network)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if p.targets.hostAllowed(host) {
		return p.dialer.DialContext(ctx, network, addr)
	}
	d := p.dialer
	d.Control = func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("address %s: %v", address, err)
		}
		if !p.targets.allowIP(ap.Addr()) {
			return fmt.Errorf("target address %s is not allowed by this server's check targets", ap.Addr().WithZone(""))
		}
		return nil
	}
	return d.DialContext(ctx, network, addr)
}
