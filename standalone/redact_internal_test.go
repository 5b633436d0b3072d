package standalone

import (
	"testing"

	"github.com/dister/dister"
)

func TestRedactTarget(t *testing.T) {
	for _, c := range []struct {
		typ          dister.CheckType
		target, want string
	}{
		{dister.CheckMySQL, "root:pw@tcp(10.0.0.1:3306)/app?timeout=1s", "root:xxxxx@tcp(10.0.0.1:3306)/app?timeout=1s"},
		{dister.CheckMySQL, "root@tcp(10.0.0.1:3306)/app", "root@tcp(10.0.0.1:3306)/app"},
		{dister.CheckMySQL, "p@ss:w@rd@tcp(h:1)/db", "p@ss:xxxxx@tcp(h:1)/db"},
		{dister.CheckMySQL, "not a dsn", "xxxxx"},
		{dister.CheckPgSQL, "postgres://u:pw@h:5432/db", "postgres://u:xxxxx@h:5432/db"},
		{dister.CheckPgSQL, "postgresql://u@h/db?password=pw&sslmode=disable", "postgresql://u@h/db?password=xxxxx&sslmode=disable"},
		{dister.CheckPgSQL, "host=h password='a b\\' c' user=u", "host=h password=xxxxx user=u"},
		{dister.CheckPgSQL, "host=h PASSWORD = pw", "host=h PASSWORD = xxxxx"},
		{dister.CheckPgSQL, "host=h user=u", "host=h user=u"},
		{dister.CheckHTTP, "http://u:pw@h/health", "http://u:xxxxx@h/health"},
		{dister.CheckWeb, "https://u@h/health", "https://u@h/health"},
		{dister.CheckWeb, "http://h/health?x=1", "http://h/health?x=1"},
		{dister.CheckHTTP, "http://u:pw@[::1/x", "xxxxx"},
		{dister.CheckTCP, "h:1", "h:1"},
		{dister.CheckScript, "check --flag", "check --flag"},
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
		if got := redactAddress(addr); got != want {
			t.Errorf("address %q: %q, want %q", addr, got, want)
		}
	}
}
