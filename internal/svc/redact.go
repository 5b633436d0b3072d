package svc

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/dister/dister/internal/health"
)

// Check targets and addresses are stored as registered, secrets included
// (the leader needs them); what is shown to people has its passwords
// replaced.

// Redacted is c's target as it may be shown.
func Redacted(c Check) string { return redactTarget(c.Type, c.Target) }

// redacted replaces a password.
const redacted = "xxxxx"

// keywordPassword matches password=... in a keyword/value connection
// string (libpq style), quoted or not.
var keywordPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redactTarget is a check target as it may be shown.
func redactTarget(t, target string) string {
	switch t {
	case health.TypeMySQL:
		cfg, err := mysql.ParseDSN(target)
		if err != nil {
			// Registered targets parse; should one not, show nothing of it.
			return redacted
		}
		if cfg.Passwd == "" {
			return target
		}
		cfg.Passwd = redacted
		return cfg.FormatDSN()
	case health.TypePgSQL:
		if strings.Contains(target, "://") {
			return redactURL(target)
		}
		return keywordPassword.ReplaceAllString(target, "${1}"+redacted)
	case health.TypeHTTP, health.TypeWeb:
		return redactURL(target)
	}
	return target
}

// RedactAddress is an instance address as it may be shown: a URL loses its
// password; host:port has none.
func RedactAddress(addr string) string {
	if strings.Contains(addr, "://") {
		return redactURL(addr)
	}
	return addr
}

// redactURL hides the userinfo password and a "password" query parameter
// (which pgx reads too). A string that does not parse as a URL is hidden
// whole if it may hold a password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if strings.ContainsAny(s, "@") || strings.Contains(strings.ToLower(s), "password") {
			return redacted
		}
		return s
	}
	changed := false
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), redacted)
		changed = true
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", redacted)
		u.RawQuery = q.Encode()
		changed = true
	}
	if !changed {
		return s
	}
	return u.String()
}
