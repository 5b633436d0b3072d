// Package health runs the health-check probes of registered service
// instances: http, web, tcp, mysql, pgsql, script and custom. It is a leaf
// package: it knows nothing of Raft, groups or the public API, so the leader
// loop that schedules probes and writes statuses lives elsewhere and this
// package stays testable on its own.
package health

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/dister/dister/internal/errs"
)

// Status is the health of an instance as a check sees it.
//
// The zero value is deliberately not Passing: a Result nobody filled in must
// never make an instance look healthy.
type Status int

const (
	Passing Status = iota + 1
	Warning
	Critical
)

func (s Status) String() string {
	switch s {
	case Passing:
		return "passing"
	case Warning:
		return "warning"
	case Critical:
		return "critical"
	}
	return "unknown"
}

// ParseStatus is the inverse of String, for statuses read back from storage.
func ParseStatus(s string) (Status, error) {
	switch s {
	case "passing":
		return Passing, nil
	case "warning":
		return Warning, nil
	case "critical":
		return Critical, nil
	}
	return 0, fmt.Errorf("health status %s: want passing, warning or critical: %w", errs.Quote(s), errs.Invalid)
}

// Result is the outcome of one probe.
type Result struct {
	Status Status
	// Output says why, for humans; at most MaxOutput bytes. It never holds a
	// password from the target (URLs are redacted, the DB drivers redact).
	Output string
	// Took is the time the probe itself ran, not the wait for a slot.
	Took time.Duration
	// NotRun: the probe could not run (script checks not enabled here, no
	// free slot in time). Status is then 0 and says nothing about the
	// target: the caller keeps the status it had.
	NotRun bool
}

// Check kinds.
const (
	TypeHTTP   = "http"   // GET Target; 2xx passing, 429 warning, else critical
	TypeWeb    = "web"    // v1.5: GET Target; 200 passing, else critical
	TypeTCP    = "tcp"    // connect to Target host:port
	TypeMySQL  = "mysql"  // Target is a go-sql-driver/mysql DSN; connect + ping
	TypePgSQL  = "pgsql"  // Target is a pgx connection string or URL; connect + ping
	TypeScript = "script" // Target is a command line; exit 0 passing, 1 warning, else critical
	TypeCustom = "custom" // v1.5: Target is a command line; passing iff trimmed stdout is "1"
)

const (
	// DefaultTimeout bounds a probe whose Check has no Timeout.
	DefaultTimeout = 2 * time.Second
	// MaxTimeout is the longest Timeout Validate accepts: a probe holds one
	// of the prober's slots for that long, so a huge one would starve others.
	MaxTimeout = time.Minute
	// MaxTargetLen bounds Target; DSNs and URLs are far shorter in practice.
	MaxTargetLen = 4096
	// MaxOutput bounds Result.Output (bytes).
	MaxOutput = 1024
)

// Check describes one probe. All kinds use just these fields; credentials
// travel inside Target (URL userinfo, DSN) as the drivers expect them.
type Check struct {
	// Type is one of the Type* constants.
	Type string
	// Target is what to probe: a URL (http, web), host:port (tcp), a DSN
	// (mysql, pgsql) or a command line (script, custom; see SplitCommand).
	Target string
	// Timeout bounds the probe; 0 means DefaultTimeout.
	Timeout time.Duration
}

func (c Check) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// IsScript reports whether c runs a command on the prober's host, which is
// what the script cluster setting guards.
func (c Check) IsScript() bool { return c.Type == TypeScript || c.Type == TypeCustom }

// Validate reports whether c can be probed. allowScript is the cluster
// setting for script checks: with it off, script and custom checks are
// refused, because whoever may register an instance could otherwise run
// commands on the leader. Errors wrap errs.Invalid.
func (c Check) Validate(allowScript bool) error {
	if err := c.validate(allowScript); err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	return nil
}

func (c Check) validate(allowScript bool) error {
	if c.Timeout < 0 || c.Timeout > MaxTimeout {
		return fmt.Errorf("timeout %v outside 0..%v: %w", c.Timeout, MaxTimeout, errs.Invalid)
	}
	if len(c.Target) > MaxTargetLen {
		return fmt.Errorf("target is %d bytes, more than %d: %w", len(c.Target), MaxTargetLen, errs.Invalid)
	}
	if c.Type != "" && strings.TrimSpace(c.Target) == "" {
		return fmt.Errorf("%s check has an empty target: %w", errs.Cut(string(c.Type)), errs.Invalid)
	}
	switch c.Type {
	case TypeHTTP, TypeWeb:
		_, err := parseHTTPURL(c.Target)
		return err
	case TypeTCP:
		return validateHostPort(c.Target)
	case TypeMySQL:
		if _, err := mysql.ParseDSN(c.Target); err != nil {
			return fmt.Errorf("mysql target is not a go-sql-driver DSN (user:pass@tcp(host:port)/db): %v: %w", err, errs.Invalid)
		}
		return nil
	case TypePgSQL:
		// pgx redacts the password in its parse errors.
		if _, err := pgx.ParseConfig(c.Target); err != nil {
			return fmt.Errorf("pgsql target is not a pgx connection string: %v: %w", err, errs.Invalid)
		}
		return nil
	case TypeScript, TypeCustom:
		if !allowScript {
			return fmt.Errorf("%s checks run commands on the leader and are disabled: enable the script checks cluster setting to register one: %w", c.Type, errs.Invalid)
		}
		_, err := SplitCommand(c.Target)
		return err
	case "":
		return fmt.Errorf("check type is empty (want http, web, tcp, mysql, pgsql, script or custom): %w", errs.Invalid)
	}
	return fmt.Errorf("unknown check type %s (want http, web, tcp, mysql, pgsql, script or custom): %w", errs.Quote(c.Type), errs.Invalid)
}

func parseHTTPURL(target string) (*url.URL, error) {
	u, err := url.Parse(target)
	if err != nil {
		// url.Error quotes the input, which may hold a password.
		return nil, fmt.Errorf("target is not a URL: %w", errs.Invalid)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("target %s: scheme must be http or https: %w", errs.Quote(u.Redacted()), errs.Invalid)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("target %s has no host: %w", errs.Quote(u.Redacted()), errs.Invalid)
	}
	return u, nil
}

func validateHostPort(target string) error {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return fmt.Errorf("tcp target %s is not host:port: %v: %w", errs.Quote(target), err, errs.Invalid)
	}
	if host == "" {
		return fmt.Errorf("tcp target %s has no host: %w", errs.Quote(target), errs.Invalid)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("tcp target %s: port must be a number in 1..65535: %w", errs.Quote(target), errs.Invalid)
	}
	return nil
}

// cut bounds s to MaxOutput bytes without splitting a UTF-8 sequence.
func cut(s string) string {
	if len(s) <= MaxOutput {
		return s
	}
	const mark = " …(cut)"
	n := MaxOutput - len(mark)
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
