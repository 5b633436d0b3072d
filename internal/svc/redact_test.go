package svc

import (
	"testing"

	"github.com/dister/dister/internal/health"
)

func TestRedactTargetTable(t *testing.T) {
	for _, c := range []struct {
		typ          string
		target, want string
	}{
		{health.TypeMySQL, "root:pw@tcp(10.0.0.1:3306)/app?timeout=1s", "root:xxxxx@tcp(10.0.0.1:3306)/app?timeout=1s"},
		{health.TypeMySQL, "root@tcp(10.0.0.1:3306)/app", "root@tcp(10.0.0.1:3306)/app"},
		{health.TypeMySQL, "p@ss:w@rd@tcp(h:1)/db", "p@ss:xxxxx@tcp(h:1)/db"},
		{health.TypeMySQL, "not a dsn", "xxxxx"},
		{health.TypePgSQL, "postgres://u:pw@h:5432/db", "postgres://u:xxxxx@h:5432/db"},
		{health.TypePgSQL, "postgresql://u@h/db?password=pw&sslmode=disable", "postgresql://u@h/db?password=xxxxx&sslmode=disable"},
		{health.TypePgSQL, "host=h password='a b\\' c' user=u", "host=h password=xxxxx user=u"},
		{health.TypePgSQL, "host=h PASSWORD = pw", "host=h PASSWORD = xxxxx"},
		{health.TypePgSQL, "host=h user=u", "host=h user=u"},
		{health.TypeHTTP, "http://u:pw@h/health", "http://u:xxxxx@h/health"},
		{health.TypeWeb, "https://u@h/health", "https://u@h/health"},
		{health.TypeWeb, "http://h/health?x=1", "http://h/health?x=1"},
		{health.TypeHTTP, "http://u:pw@[::1/x", "xxxxx"},
		{health.TypeTCP, "h:1", "h:1"},
		{health.TypeScript, "check --flag", "check --flag"},
	} {
		if got := redactTarget(c.typ, c.target); got != c.want {
			t.Errorf("%s %q: %q, want %q", c.typ, c.target, got, c.want)
		}
	}
	for addr, want := range map[string]string{
		"10.0.0.1:80":          "10.0.0.1:80",
		"http://u:pw@h:80/":    "http://u:xxxxx@h:80/",
		"http://h:80/":         "http://h:80/",
		"redis://:pw@h:6379/0": "redis://:xxxxx@h:6379/0",
	} {
		if got := RedactAddress(addr); got != want {
			t.Errorf("address %q: %q, want %q", addr, got, want)
		}
	}
}
