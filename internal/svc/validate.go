package svc

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/health"
)

// Limits of an instance, enforced by Validate.
const (
	MaxNameLen      = 128
	MaxAddressLen   = 1024
	MaxPriority     = 1_000_000
	MaxTags         = 64
	MaxTagLen       = 256
	MaxMeta         = 64
	MaxMetaKeyLen   = 128
	MaxMetaValueLen = 1024
	MaxExtraLen     = 64 << 10

	DefaultInterval = 10 * time.Second
	MinInterval     = 100 * time.Millisecond
	MaxInterval     = 24 * time.Hour
	MinTTL          = time.Second
	MaxTTL          = 24 * time.Hour
	MaxDeregister   = 30 * 24 * time.Hour
)

// Env is what validation needs to know about the cluster.
type Env struct {
	// AllLoopback: every server's Raft address is a loopback one (one
	// host), so loopback addresses and targets are reachable by the leader.
	AllLoopback bool
	// AllowScript: the script checks cluster setting is on.
	AllowScript bool
}

// ValidName checks a service name or an instance id: 1..128 of
// [A-Za-z0-9_.-], not starting with '.' or '-'.
func ValidName(what, s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("%s %s: want 1..%d characters: %w", what, errs.Quote(s), MaxNameLen, errs.Invalid)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' ||
			i > 0 && (c == '.' || c == '-')
		if !ok {
			return fmt.Errorf("%s %s: only letters, digits, '_', and after the first character '.' and '-': %w", what, errs.Quote(s), errs.Invalid)
		}
	}
	return nil
}

// Normalize fills the check's defaults in r. It runs before Validate.
func Normalize(r *Record) {
	c := &r.Check
	if c.Type == "" || c.Type == TypeTTL || c.Type == TypeNever {
		return
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = min(health.DefaultTimeout, c.Interval)
	}
}

// Validate checks a record a client registers. The address may be empty
// only for a compatibility layer's record (one with Extra data).
func Validate(r *Record, env Env) error {
	if err := ValidName("service name", r.Service); err != nil {
		return err
	}
	if err := ValidName("instance id", r.ID); err != nil {
		return err
	}
	if err := validateAddress(r.Address, len(r.Extra) > 0, env); err != nil {
		return err
	}
	if r.Priority < 0 || r.Priority > MaxPriority {
		return fmt.Errorf("priority %d: want 0..%d: %w", r.Priority, MaxPriority, errs.Invalid)
	}
	if len(r.Tags) > MaxTags {
		return fmt.Errorf("%d tags, more than %d: %w", len(r.Tags), MaxTags, errs.Invalid)
	}
	for _, t := range r.Tags {
		if t == "" || len(t) > MaxTagLen {
			return fmt.Errorf("tag %s: want 1..%d bytes: %w", errs.Quote(t), MaxTagLen, errs.Invalid)
		}
	}
	if len(r.Meta) > MaxMeta {
		return fmt.Errorf("%d meta entries, more than %d: %w", len(r.Meta), MaxMeta, errs.Invalid)
	}
	for k, v := range r.Meta {
		if k == "" || len(k) > MaxMetaKeyLen || len(v) > MaxMetaValueLen {
			return fmt.Errorf("meta %s: keys 1..%d bytes, values up to %d: %w", errs.Quote(k), MaxMetaKeyLen, MaxMetaValueLen, errs.Invalid)
		}
	}
	if len(r.Extra) > MaxExtraLen {
		return fmt.Errorf("extra data of %d bytes, more than %d: %w", len(r.Extra), MaxExtraLen, errs.TooLarge)
	}
	if err := validateCheck(r.Check, env); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	return nil
}

func validateCheck(c Check, env Env) error {
	if c.Type == "" {
		if c != (Check{}) {
			return fmt.Errorf("settings without a type: %w", errs.Invalid)
		}
		return nil
	}
	if c.DeregisterCriticalAfter < 0 || c.DeregisterCriticalAfter > MaxDeregister {
		return fmt.Errorf("deregister_critical_after %v outside 0..%v: %w", c.DeregisterCriticalAfter, MaxDeregister, errs.Invalid)
	}
	if c.Type == TypeNever {
		if c != (Check{Type: TypeNever}) {
			return fmt.Errorf("a never check takes no settings: %w", errs.Invalid)
		}
		return nil
	}
	if c.Type == TypeTTL {
		if c.TTL < MinTTL || c.TTL > MaxTTL {
			return fmt.Errorf("ttl %v outside %v..%v: %w", c.TTL, MinTTL, MaxTTL, errs.Invalid)
		}
		if c.Target != "" || c.Interval != 0 || c.Timeout != 0 {
			return fmt.Errorf("a ttl check takes no target, interval or timeout: %w", errs.Invalid)
		}
		return nil
	}
	if c.TTL != 0 {
		return fmt.Errorf("ttl is for ttl checks, not %s: %w", c.Type, errs.Invalid)
	}
	if c.Interval < MinInterval || c.Interval > MaxInterval {
		return fmt.Errorf("interval %v outside %v..%v: %w", c.Interval, MinInterval, MaxInterval, errs.Invalid)
	}
	if c.Timeout < 0 || c.Timeout > c.Interval {
		return fmt.Errorf("timeout %v outside 0..interval (%v): %w", c.Timeout, c.Interval, errs.Invalid)
	}
	if err := c.Probe().Validate(env.AllowScript); err != nil {
		return err
	}
	if env.AllLoopback {
		return nil
	}
	for _, host := range targetHosts(c) {
		if isLoopback(host) {
			return fmt.Errorf("target host %s is loopback, but the servers are on more than one host (the leader could not reach it): %w", errs.Quote(host), errs.Invalid)
		}
	}
	return nil
}

// validateAddress checks an instance address: host:port or a URL.
func validateAddress(addr string, optional bool, env Env) error {
	if addr == "" {
		if optional {
			return nil
		}
		return fmt.Errorf("address is empty (want host:port or a URL): %w", errs.Invalid)
	}
	if len(addr) > MaxAddressLen {
		return fmt.Errorf("address of %d bytes, more than %d: %w", len(addr), MaxAddressLen, errs.Invalid)
	}
	host, err := addressHost(addr)
	if err != nil {
		return err
	}
	if !env.AllLoopback && isLoopback(host) {
		return fmt.Errorf("address %s is loopback, but the servers are on more than one host: %w", errs.Quote(addr), errs.Invalid)
	}
	return nil
}

func addressHost(addr string) (string, error) {
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil || u.Hostname() == "" {
			return "", fmt.Errorf("address %s is not a URL with a host: %w", errs.Quote(addr), errs.Invalid)
		}
		return u.Hostname(), nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return "", fmt.Errorf("address %s: want host:port or a URL: %w", errs.Quote(addr), errs.Invalid)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("address %s: port must be 1..65535: %w", errs.Quote(addr), errs.Invalid)
	}
	return host, nil
}

// targetHosts are the hosts a probe of c may connect to (none for scripts
// and unix sockets; a pgsql target may list fallback hosts).
func targetHosts(c Check) []string {
	switch c.Type {
	case health.TypeHTTP, health.TypeWeb:
		if u, err := url.Parse(c.Target); err == nil {
			return []string{u.Hostname()}
		}
	case health.TypeTCP:
		if h, _, err := net.SplitHostPort(c.Target); err == nil {
			return []string{h}
		}
	case health.TypeMySQL:
		if cfg, err := mysql.ParseDSN(c.Target); err == nil && cfg.Net == "tcp" {
			if h, _, err := net.SplitHostPort(cfg.Addr); err == nil {
				return []string{h}
			}
			return []string{cfg.Addr}
		}
	case health.TypePgSQL:
		cfg, err := pgx.ParseConfig(c.Target)
		if err != nil {
			return nil
		}
		hosts := []string{cfg.Host}
		for _, f := range cfg.Fallbacks {
			hosts = append(hosts, f.Host)
		}
		return slices.DeleteFunc(hosts, func(h string) bool { return strings.HasPrefix(h, "/") })
	}
	return nil
}

// isLoopback reports whether a connection to host reaches the connecting
// machine itself: "localhost", a loopback IP, or the unspecified address
// (0.0.0.0, ::), which a connection takes for the local host.
func isLoopback(host string) bool {
	ip, ok := hostIP(host)
	return ok && (ip.IsLoopback() || ip.IsUnspecified())
}

// hostIP is host's IP, with localhost names as 127.0.0.1.
func hostIP(host string) (netip.Addr, bool) {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return ip, err == nil
}

// IsLoopbackAddr reports whether a server address (host:port) is loopback.
// A server listening on the unspecified address is not: others may reach
// it from other hosts.
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, ok := hostIP(host)
	return ok && ip.IsLoopback()
}
