package pattern

import (
	"net/netip"
	"strings"
)

// Addresses is a when.sourceIPs list: CIDR ranges, a single address standing for its own /32 or
// /128.
type Addresses []netip.Prefix

// ParseAddresses compiles a list of CIDRs and addresses.
func ParseAddresses(list []string) (Addresses, error) {
	out := make(Addresses, 0, len(list))
	for _, s := range list {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, err
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Contains reports whether addr is in any of the ranges; an IPv4-mapped IPv6 address counts as
// IPv4, an invalid (unknown) address is in none.
func (as Addresses) Contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return false
	}
	for _, p := range as {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
