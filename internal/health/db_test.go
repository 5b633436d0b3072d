package health

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
)

// dsn reads a DSN that .ci/databases.sh prints. In CI a missing one is a
// failure, not a skip, so the DB checks cannot silently go untested.
func dsn(t *testing.T, env string) string {
	t.Helper()
	v := os.Getenv(env)
	if v != "" {
		return v
	}
	msg := env + ` is not set: run eval "$(.ci/databases.sh)" (as root) to start MariaDB and PostgreSQL and export it`
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// closedPort returns a loopback address with nothing listening.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestMySQL(t *testing.T) {
	good := dsn(t, "DISTER_TEST_MYSQL_DSN")
	cfg, err := mysql.ParseDSN(good)
	if err != nil {
		t.Fatalf("DISTER_TEST_MYSQL_DSN: %v", err)
	}
	p := newProber(t, Options{})
	probe := func(cfg *mysql.Config) Result {
		return p.Probe(context.Background(), Check{Type: TypeMySQL, Target: cfg.FormatDSN(), Timeout: 3 * time.Second})
	}

	if r := probe(cfg); r.Status != Passing {
		t.Fatalf("right credentials: %v %q", r.Status, r.Output)
	}

	wrong := cfg.Clone()
	wrong.Passwd = "wrong-" + cfg.Passwd
	r := probe(wrong)
	if r.Status != Critical || !strings.Contains(r.Output, "Access denied") {
		t.Fatalf("wrong password: %v %q, want critical with the server's Access denied", r.Status, r.Output)
	}
	t.Logf("wrong password: %s", r.Output)
	if strings.Contains(r.Output, wrong.Passwd) {
		t.Fatalf("output %q holds the password", r.Output)
	}

	down := cfg.Clone()
	down.Net, down.Addr = "tcp", closedPort(t)
	if r := probe(down); r.Status != Critical || !strings.Contains(r.Output, "refused") {
		t.Fatalf("nothing listening: %v %q", r.Status, r.Output)
	}
}

func TestPgSQL(t *testing.T) {
	good := dsn(t, "DISTER_TEST_PGSQL_DSN")
	if _, err := pgx.ParseConfig(good); err != nil {
		t.Fatalf("DISTER_TEST_PGSQL_DSN: %v", err)
	}
	p := newProber(t, Options{})
	probe := func(target string) Result {
		return p.Probe(context.Background(), Check{Type: TypePgSQL, Target: target, Timeout: 3 * time.Second})
	}

	if r := probe(good); r.Status != Passing {
		t.Fatalf("right credentials: %v %q", r.Status, r.Output)
	}

	// Keyword/value settings after the URL's would be ambiguous; rebuild a
	// keyword/value string from the parsed config instead.
	cfg, _ := pgx.ParseConfig(good)
	kv := func(host string, port uint16, password string) string {
		return "host=" + host + " port=" + itoa(int(port)) + " user=" + cfg.User + " dbname=" + cfg.Database +
			" password=" + password + " sslmode=disable"
	}
	r := probe(kv(cfg.Host, cfg.Port, "wrong-pw-xyz"))
	if r.Status != Critical || !strings.Contains(r.Output, "password authentication failed") {
		t.Fatalf("wrong password: %v %q, want critical with the server's message", r.Status, r.Output)
	}
	t.Logf("wrong password: %s", r.Output)
	if strings.Contains(r.Output, "wrong-pw-xyz") {
		t.Fatalf("output %q holds the password", r.Output)
	}

	host, port, _ := net.SplitHostPort(closedPort(t))
	if r := probe(kv(host, uint16(atoi(port)), cfg.Password)); r.Status != Critical || !strings.Contains(r.Output, "refused") {
		t.Fatalf("nothing listening: %v %q", r.Status, r.Output)
	}
}
