package svc

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/health"
)

func TestValidName(t *testing.T) {
	good := []string{
		"a", "Z", "0", "_", "web", "Web_1", "a.b", "a-b", "a.", "a-", "_.-", "9lives",
		strings.Repeat("a", MaxNameLen),
	}
	for _, s := range good {
		if err := ValidName("name", s); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", s, err)
		}
	}
	bad := map[string]string{
		"empty":           "",
		"129 chars":       strings.Repeat("a", MaxNameLen+1),
		"slash":           "a/b",
		"leading slash":   "/a",
		"NUL":             "a\x00b",
		"leading NUL":     "\x00",
		"leading dot":     ".a",
		"only dot":        ".",
		"leading dash":    "-a",
		"unicode":         "héllo",
		"unicode first":   "ébc",
		"space":           "a b",
		"colon":           "a:b",
		"newline":         "a\n",
		"percent":         "a%2f",
		"dotdot":          "..",
		"129 with valid":  "x" + strings.Repeat("-", MaxNameLen),
		"full width char": "ａ",
	}
	for name, s := range bad {
		err := ValidName("name", s)
		if !errors.Is(err, errs.Invalid) {
			t.Errorf("%s: ValidName(%q) = %v, want errs.Invalid", name, s, err)
		}
	}
	// The error names what was checked.
	if err := ValidName("instance id", ""); err == nil || !strings.Contains(err.Error(), "instance id") {
		t.Errorf("error %v does not name the field", err)
	}
}

// goodRecord is a valid record with a probed http check on a non-loopback
// host.
func goodRecord() *Record {
	return &Record{
		Service:  "web",
		ID:       "i-1",
		Address:  "10.0.0.5:8080",
		Priority: 10,
		Tags:     []string{"v1", "blue"},
		Meta:     map[string]string{"zone": "a"},
		Check: Check{Type: health.TypeHTTP, Target: "http://10.0.0.5:8080/health",
			Interval: 10 * time.Second, Timeout: 2 * time.Second},
	}
}

func TestValidateRecords(t *testing.T) {
	manyTags := make([]string, MaxTags+1)
	for i := range manyTags {
		manyTags[i] = fmt.Sprint("t", i)
	}
	manyMeta := make(map[string]string, MaxMeta+1)
	for i := range MaxMeta + 1 {
		manyMeta[fmt.Sprint("k", i)] = "v"
	}
	fullMeta := make(map[string]string, MaxMeta)
	for i := range MaxMeta {
		fullMeta[fmt.Sprint("k", i)] = "v"
	}
	probed := func(typ, target string) Check {
		return Check{Type: typ, Target: target, Interval: time.Second, Timeout: 500 * time.Millisecond}
	}
	scriptEnv := Env{AllowScript: true}

	cases := []struct {
		name string
		edit func(r *Record)
		env  Env
		want error // nil, errs.Invalid or errs.TooLarge
	}{
		{"good", func(r *Record) {}, Env{}, nil},

		// Names.
		{"empty service", func(r *Record) { r.Service = "" }, Env{}, errs.Invalid},
		{"bad service", func(r *Record) { r.Service = "a/b" }, Env{}, errs.Invalid},
		{"empty id", func(r *Record) { r.ID = "" }, Env{}, errs.Invalid},
		{"bad id", func(r *Record) { r.ID = ".x" }, Env{}, errs.Invalid},

		// Address.
		{"address host:port name", func(r *Record) { r.Address = "db.example.com:5432" }, Env{}, nil},
		{"address ipv6", func(r *Record) { r.Address = "[2001:db8::1]:80" }, Env{}, nil},
		{"address URL", func(r *Record) { r.Address = "https://web.example.com/app" }, Env{}, nil},
		{"address URL with port", func(r *Record) { r.Address = "http://10.0.0.5:8080" }, Env{}, nil},
		{"address port 1", func(r *Record) { r.Address = "10.0.0.5:1" }, Env{}, nil},
		{"address port 65535", func(r *Record) { r.Address = "10.0.0.5:65535" }, Env{}, nil},
		{"address port 0", func(r *Record) { r.Address = "10.0.0.5:0" }, Env{}, errs.Invalid},
		{"address port 65536", func(r *Record) { r.Address = "10.0.0.5:65536" }, Env{}, errs.Invalid},
		{"address port negative", func(r *Record) { r.Address = "10.0.0.5:-1" }, Env{}, errs.Invalid},
		{"address port name", func(r *Record) { r.Address = "10.0.0.5:http" }, Env{}, errs.Invalid},
		{"address no port", func(r *Record) { r.Address = "10.0.0.5" }, Env{}, errs.Invalid},
		{"address empty port", func(r *Record) { r.Address = "10.0.0.5:" }, Env{}, errs.Invalid},
		{"address no host", func(r *Record) { r.Address = ":8080" }, Env{}, errs.Invalid},
		{"address URL no host", func(r *Record) { r.Address = "http:///path" }, Env{}, errs.Invalid},
		{"address bad URL", func(r *Record) { r.Address = "http://[::1" }, Env{}, errs.Invalid},
		{"address too long", func(r *Record) { r.Address = "h" + strings.Repeat("a", MaxAddressLen) + ":80" }, Env{}, errs.Invalid},
		{"address empty", func(r *Record) { r.Address = "" }, Env{}, errs.Invalid},
		{"address empty with extra", func(r *Record) { r.Address, r.Extra = "", []byte(`{"node":1}`) }, Env{}, nil},
		{"address bad with extra", func(r *Record) { r.Address, r.Extra = "nope", []byte(`{}`) }, Env{}, errs.Invalid},

		// Priority.
		{"priority 0", func(r *Record) { r.Priority = 0 }, Env{}, nil},
		{"priority max", func(r *Record) { r.Priority = MaxPriority }, Env{}, nil},
		{"priority negative", func(r *Record) { r.Priority = -1 }, Env{}, errs.Invalid},
		{"priority over max", func(r *Record) { r.Priority = MaxPriority + 1 }, Env{}, errs.Invalid},

		// Tags.
		{"no tags", func(r *Record) { r.Tags = nil }, Env{}, nil},
		{"max tags", func(r *Record) { r.Tags = manyTags[:MaxTags] }, Env{}, nil},
		{"too many tags", func(r *Record) { r.Tags = manyTags }, Env{}, errs.Invalid},
		{"empty tag", func(r *Record) { r.Tags = []string{"a", ""} }, Env{}, errs.Invalid},
		{"longest tag", func(r *Record) { r.Tags = []string{strings.Repeat("t", MaxTagLen)} }, Env{}, nil},
		{"tag too long", func(r *Record) { r.Tags = []string{strings.Repeat("t", MaxTagLen+1)} }, Env{}, errs.Invalid},

		// Meta.
		{"max meta", func(r *Record) { r.Meta = fullMeta }, Env{}, nil},
		{"too much meta", func(r *Record) { r.Meta = manyMeta }, Env{}, errs.Invalid},
		{"empty meta key", func(r *Record) { r.Meta = map[string]string{"": "v"} }, Env{}, errs.Invalid},
		{"empty meta value", func(r *Record) { r.Meta = map[string]string{"k": ""} }, Env{}, nil},
		{"longest meta key", func(r *Record) { r.Meta = map[string]string{strings.Repeat("k", MaxMetaKeyLen): "v"} }, Env{}, nil},
		{"meta key too long", func(r *Record) { r.Meta = map[string]string{strings.Repeat("k", MaxMetaKeyLen+1): "v"} }, Env{}, errs.Invalid},
		{"longest meta value", func(r *Record) { r.Meta = map[string]string{"k": strings.Repeat("v", MaxMetaValueLen)} }, Env{}, nil},
		{"meta value too long", func(r *Record) { r.Meta = map[string]string{"k": strings.Repeat("v", MaxMetaValueLen+1)} }, Env{}, errs.Invalid},

		// Extra.
		{"largest extra", func(r *Record) { r.Extra = make([]byte, MaxExtraLen) }, Env{}, nil},
		{"extra too large", func(r *Record) { r.Extra = make([]byte, MaxExtraLen+1) }, Env{}, errs.TooLarge},
		{"extra too large, no address", func(r *Record) { r.Address, r.Extra = "", make([]byte, MaxExtraLen+1) }, Env{}, errs.TooLarge},

		// No check.
		{"no check", func(r *Record) { r.Check = Check{} }, Env{}, nil},
		{"no type with target", func(r *Record) { r.Check = Check{Target: "10.0.0.5:80"} }, Env{}, errs.Invalid},
		{"no type with interval", func(r *Record) { r.Check = Check{Interval: time.Second} }, Env{}, errs.Invalid},
		{"no type with ttl", func(r *Record) { r.Check = Check{TTL: time.Second} }, Env{}, errs.Invalid},
		{"no type with deregister", func(r *Record) { r.Check = Check{DeregisterCriticalAfter: time.Minute} }, Env{}, errs.Invalid},

		// Probed checks: interval and timeout.
		{"interval min", func(r *Record) { r.Check.Interval, r.Check.Timeout = MinInterval, MinInterval }, Env{}, nil},
		{"interval max", func(r *Record) { r.Check.Interval = MaxInterval }, Env{}, nil},
		{"interval below min", func(r *Record) { r.Check.Interval, r.Check.Timeout = MinInterval-time.Millisecond, 0 }, Env{}, errs.Invalid},
		{"interval zero", func(r *Record) { r.Check.Interval, r.Check.Timeout = 0, 0 }, Env{}, errs.Invalid},
		{"interval over max", func(r *Record) { r.Check.Interval = MaxInterval + time.Second }, Env{}, errs.Invalid},
		{"interval negative", func(r *Record) { r.Check.Interval = -time.Second }, Env{}, errs.Invalid},
		{"timeout zero", func(r *Record) { r.Check.Timeout = 0 }, Env{}, nil},
		{"timeout = interval", func(r *Record) { r.Check.Interval, r.Check.Timeout = time.Second, time.Second }, Env{}, nil},
		{"timeout > interval", func(r *Record) { r.Check.Interval, r.Check.Timeout = time.Second, time.Second+time.Millisecond }, Env{}, errs.Invalid},
		{"timeout negative", func(r *Record) { r.Check.Timeout = -time.Millisecond }, Env{}, errs.Invalid},
		{"timeout over health max", func(r *Record) { r.Check.Interval, r.Check.Timeout = time.Hour, 2*time.Minute }, Env{}, errs.Invalid},
		{"ttl on probed check", func(r *Record) { r.Check.TTL = time.Second }, Env{}, errs.Invalid},
		{"deregister", func(r *Record) { r.Check.DeregisterCriticalAfter = time.Minute }, Env{}, nil},
		{"deregister max", func(r *Record) { r.Check.DeregisterCriticalAfter = MaxDeregister }, Env{}, nil},
		{"deregister over max", func(r *Record) { r.Check.DeregisterCriticalAfter = MaxDeregister + time.Second }, Env{}, errs.Invalid},
		{"deregister negative", func(r *Record) { r.Check.DeregisterCriticalAfter = -time.Second }, Env{}, errs.Invalid},

		// Probed checks: kinds and targets.
		{"web", func(r *Record) { r.Check = probed(health.TypeWeb, "https://10.0.0.5/") }, Env{}, nil},
		{"tcp", func(r *Record) { r.Check = probed(health.TypeTCP, "10.0.0.5:5432") }, Env{}, nil},
		{"tcp no port", func(r *Record) { r.Check = probed(health.TypeTCP, "10.0.0.5") }, Env{}, errs.Invalid},
		{"tcp port 0", func(r *Record) { r.Check = probed(health.TypeTCP, "10.0.0.5:0") }, Env{}, errs.Invalid},
		{"http ftp scheme", func(r *Record) { r.Check = probed(health.TypeHTTP, "ftp://10.0.0.5/") }, Env{}, errs.Invalid},
		{"http no host", func(r *Record) { r.Check = probed(health.TypeHTTP, "http:///x") }, Env{}, errs.Invalid},
		{"http empty target", func(r *Record) { r.Check = probed(health.TypeHTTP, "") }, Env{}, errs.Invalid},
		{"http target too long", func(r *Record) {
			r.Check = probed(health.TypeHTTP, "http://10.0.0.5/"+strings.Repeat("x", health.MaxTargetLen))
		}, Env{}, errs.Invalid},
		{"mysql", func(r *Record) { r.Check = probed(health.TypeMySQL, "u:p@tcp(10.0.0.5:3306)/db") }, Env{}, nil},
		{"mysql bad dsn", func(r *Record) { r.Check = probed(health.TypeMySQL, "u:p@tcp(10.0.0.5:3306") }, Env{}, errs.Invalid},
		{"mysql unix socket", func(r *Record) { r.Check = probed(health.TypeMySQL, "u:p@unix(/run/mysqld.sock)/db") }, Env{}, nil},
		{"pgsql url", func(r *Record) { r.Check = probed(health.TypePgSQL, "postgres://u:p@10.0.0.5:5432/db") }, Env{}, nil},
		{"pgsql keywords", func(r *Record) { r.Check = probed(health.TypePgSQL, "host=10.0.0.5 user=u dbname=db") }, Env{}, nil},
		{"pgsql unix socket", func(r *Record) { r.Check = probed(health.TypePgSQL, "host=/run/postgresql user=u") }, Env{}, nil},
		{"pgsql bad", func(r *Record) { r.Check = probed(health.TypePgSQL, "postgres://u@10.0.0.5:notaport/db") }, Env{}, errs.Invalid},
		{"unknown type", func(r *Record) { r.Check = probed("gopher", "10.0.0.5:70") }, Env{}, errs.Invalid},
		{"script refused", func(r *Record) { r.Check = probed(health.TypeScript, "/bin/true") }, Env{}, errs.Invalid},
		{"custom refused", func(r *Record) { r.Check = probed(health.TypeCustom, "/bin/echo 1") }, Env{}, errs.Invalid},
		{"script allowed", func(r *Record) { r.Check = probed(health.TypeScript, "/bin/true") }, scriptEnv, nil},
		{"custom allowed", func(r *Record) { r.Check = probed(health.TypeCustom, "/bin/echo 1") }, scriptEnv, nil},
		{"script allowed, empty command", func(r *Record) { r.Check = probed(health.TypeScript, "  ") }, scriptEnv, errs.Invalid},

		// ttl.
		{"ttl", func(r *Record) { r.Check = Check{Type: TypeTTL, TTL: 30 * time.Second} }, Env{}, nil},
		{"ttl min", func(r *Record) { r.Check = Check{Type: TypeTTL, TTL: MinTTL} }, Env{}, nil},
		{"ttl max", func(r *Record) { r.Check = Check{Type: TypeTTL, TTL: MaxTTL} }, Env{}, nil},
		{"ttl below min", func(r *Record) { r.Check = Check{Type: TypeTTL, TTL: MinTTL - time.Millisecond} }, Env{}, errs.Invalid},
		{"ttl zero", func(r *Record) { r.Check = Check{Type: TypeTTL} }, Env{}, errs.Invalid},
		{"ttl over max", func(r *Record) { r.Check = Check{Type: TypeTTL, TTL: MaxTTL + time.Second} }, Env{}, errs.Invalid},
		{"ttl with target", func(r *Record) { r.Check = Check{Type: TypeTTL, TTL: time.Minute, Target: "10.0.0.5:80"} }, Env{}, errs.Invalid},
		{"ttl with interval", func(r *Record) { r.Check = Check{Type: TypeTTL, TTL: time.Minute, Interval: time.Second} }, Env{}, errs.Invalid},
		{"ttl with timeout", func(r *Record) { r.Check = Check{Type: TypeTTL, TTL: time.Minute, Timeout: time.Second} }, Env{}, errs.Invalid},
		{"ttl with deregister", func(r *Record) {
			r.Check = Check{Type: TypeTTL, TTL: time.Minute, DeregisterCriticalAfter: time.Hour}
		}, Env{}, nil},

		// never.
		{"never", func(r *Record) { r.Check = Check{Type: TypeNever} }, Env{}, nil},
		{"never with target", func(r *Record) { r.Check = Check{Type: TypeNever, Target: "10.0.0.5:80"} }, Env{}, errs.Invalid},
		{"never with interval", func(r *Record) { r.Check = Check{Type: TypeNever, Interval: time.Second} }, Env{}, errs.Invalid},
		{"never with timeout", func(r *Record) { r.Check = Check{Type: TypeNever, Timeout: time.Second} }, Env{}, errs.Invalid},
		{"never with ttl", func(r *Record) { r.Check = Check{Type: TypeNever, TTL: time.Second} }, Env{}, errs.Invalid},
		{"never with deregister", func(r *Record) { r.Check = Check{Type: TypeNever, DeregisterCriticalAfter: time.Minute} }, Env{}, errs.Invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := goodRecord()
			tc.edit(r)
			err := Validate(r, tc.env)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			case tc.want == errs.Invalid && errors.Is(err, errs.TooLarge),
				tc.want == errs.TooLarge && errors.Is(err, errs.Invalid):
				t.Fatalf("Validate = %v wraps both Invalid and TooLarge", err)
			}
		})
	}
}

// TestValidateDoesNotModify: Validate only reads the record (Normalize is
// what fills defaults).
func TestValidateDoesNotModify(t *testing.T) {
	r := goodRecord()
	r.Check.Timeout = 0
	before := *r
	if err := Validate(r, Env{}); err != nil {
		t.Fatal(err)
	}
	if r.Check != before.Check || r.Address != before.Address || r.Priority != before.Priority {
		t.Fatalf("Validate changed the record: %+v -> %+v", before, *r)
	}
}

func TestValidateOneHostRule(t *testing.T) {
	probed := func(typ, target string) Check {
		return Check{Type: typ, Target: target, Interval: time.Second, Timeout: time.Second}
	}
	type tc struct {
		name    string
		address string
		check   Check
	}
	loopback := []tc{
		{"address 127.0.0.1", "127.0.0.1:8080", Check{}},
		{"address 127.1.2.3", "127.1.2.3:8080", Check{}},
		{"address ::1", "[::1]:8080", Check{}},
		{"address ::ffff:127.0.0.1", "[::ffff:127.0.0.1]:8080", Check{}},
		{"address localhost", "localhost:8080", Check{}},
		{"address LOCALHOST", "LOCALHOST:8080", Check{}},
		{"address x.localhost", "app.localhost:8080", Check{}},
		{"address URL 127.0.0.1", "http://127.0.0.1:8080/", Check{}},
		{"address URL ::1", "http://[::1]:8080/", Check{}},
		{"address URL localhost", "https://localhost/", Check{}},
		{"http 127.0.0.1", "", probed(health.TypeHTTP, "http://127.0.0.1:8080/health")},
		{"http ::1", "", probed(health.TypeHTTP, "http://[::1]:8080/health")},
		{"http localhost", "", probed(health.TypeHTTP, "http://localhost/health")},
		{"http userinfo localhost", "", probed(health.TypeHTTP, "http://u:p@localhost:80/")},
		{"web localhost", "", probed(health.TypeWeb, "https://localhost:8443/")},
		{"tcp 127.0.0.1", "", probed(health.TypeTCP, "127.0.0.1:5432")},
		{"tcp ::1", "", probed(health.TypeTCP, "[::1]:5432")},
		{"tcp localhost", "", probed(health.TypeTCP, "localhost:5432")},
		{"mysql 127.0.0.1", "", probed(health.TypeMySQL, "u:p@tcp(127.0.0.1:3306)/db")},
		{"mysql localhost", "", probed(health.TypeMySQL, "u:p@tcp(localhost:3306)/db")},
		{"mysql ::1", "", probed(health.TypeMySQL, "u:p@tcp([::1]:3306)/db")},
		{"mysql default address", "", probed(health.TypeMySQL, "u:p@/db")},
		{"pgsql url localhost", "", probed(health.TypePgSQL, "postgres://u:p@localhost:5432/db")},
		{"pgsql url 127.0.0.1", "", probed(health.TypePgSQL, "postgresql://u@127.0.0.1/db")},
		{"pgsql url ::1", "", probed(health.TypePgSQL, "postgres://u@[::1]:5432/db")},
		{"pgsql keywords localhost", "", probed(health.TypePgSQL, "host=localhost user=u dbname=db")},
		{"pgsql keywords 127.0.0.1", "", probed(health.TypePgSQL, "host=127.0.0.1 port=5432 user=u password=p")},
	}
	nonLoopback := []tc{
		{"address 10.0.0.5", "10.0.0.5:8080", Check{}},
		{"address name", "db.example.com:8080", Check{}},
		{"address URL", "http://10.0.0.5:8080/", Check{}},
		{"address localhost.example", "localhost.example.com:80", Check{}},
		{"address 128.0.0.1", "128.0.0.1:80", Check{}},
		{"http 10.0.0.5", "", probed(health.TypeHTTP, "http://10.0.0.5:8080/health")},
		{"web 10.0.0.5", "", probed(health.TypeWeb, "http://10.0.0.5/")},
		{"tcp 10.0.0.5", "", probed(health.TypeTCP, "10.0.0.5:5432")},
		{"tcp ipv6", "", probed(health.TypeTCP, "[2001:db8::5]:5432")},
		{"mysql 10.0.0.5", "", probed(health.TypeMySQL, "u:p@tcp(10.0.0.5:3306)/db")},
		{"mysql unix", "", probed(health.TypeMySQL, "u:p@unix(/tmp/mysql.sock)/db")},
		{"pgsql url 10.0.0.5", "", probed(health.TypePgSQL, "postgres://u:p@10.0.0.5:5432/db")},
		{"pgsql keywords 10.0.0.5", "", probed(health.TypePgSQL, "host=10.0.0.5 user=u dbname=db")},
		{"pgsql unix socket", "", probed(health.TypePgSQL, "host=/var/run/postgresql user=u dbname=db")},
		// A script's target is a command line, not a host.
		{"script mentioning localhost", "", probed(health.TypeScript, "/usr/bin/curl -f http://localhost/")},
	}
	build := func(c tc) *Record {
		r := goodRecord()
		if c.address != "" {
			r.Address = c.address
		}
		r.Check = c.check
		return r
	}
	multiHost := Env{AllLoopback: false, AllowScript: true}
	oneHost := Env{AllLoopback: true, AllowScript: true}
	for _, c := range loopback {
		t.Run("loopback/"+c.name, func(t *testing.T) {
			if err := Validate(build(c), multiHost); !errors.Is(err, errs.Invalid) {
				t.Errorf("several hosts: Validate = %v, want errs.Invalid", err)
			} else if !strings.Contains(err.Error(), "loopback") {
				t.Errorf("several hosts: error %q does not say why", err)
			}
			if err := Validate(build(c), oneHost); err != nil {
				t.Errorf("one host: Validate = %v, want nil", err)
			}
		})
	}
	for _, c := range nonLoopback {
		t.Run("other/"+c.name, func(t *testing.T) {
			for _, env := range []Env{multiHost, oneHost} {
				if err := Validate(build(c), env); err != nil {
					t.Errorf("%+v: Validate = %v, want nil", env, err)
				}
			}
		})
	}
}

// TestValidateOneHostRuleLoopbackFallback: a pgsql target may list several
// hosts; pgx tries the others when the first fails, so a loopback one among
// them makes the leader probe itself just as a loopback first host would.
func TestValidateOneHostRuleLoopbackFallback(t *testing.T) {
	for _, target := range []string{
		"postgres://u:p@10.0.0.5:5432,127.0.0.1:5432/db",
		"host=10.0.0.5,localhost user=u dbname=db",
	} {
		r := goodRecord()
		r.Check = Check{Type: health.TypePgSQL, Target: target, Interval: time.Second, Timeout: time.Second}
		if err := Validate(r, Env{}); !errors.Is(err, errs.Invalid) {
			t.Errorf("pgsql target %q with a loopback fallback host: Validate = %v, want errs.Invalid", target, err)
		}
	}
}

// TestValidateOneHostRuleUnspecified: connecting to the unspecified address
// (0.0.0.0, ::) reaches the connecting machine itself, so with servers on
// several hosts it is as unreachable-by-design as 127.0.0.1.
func TestValidateOneHostRuleUnspecified(t *testing.T) {
	for _, c := range []struct{ address, typ, target string }{
		{"0.0.0.0:8080", "", ""},
		{"[::]:8080", "", ""},
		{"10.0.0.5:8080", health.TypeTCP, "0.0.0.0:5432"},
		{"10.0.0.5:8080", health.TypeHTTP, "http://0.0.0.0:8080/health"},
		{"10.0.0.5:8080", health.TypeHTTP, "http://[::]:8080/health"},
	} {
		r := goodRecord()
		r.Address = c.address
		r.Check = Check{}
		if c.typ != "" {
			r.Check = Check{Type: c.typ, Target: c.target, Interval: time.Second, Timeout: time.Second}
		}
		if err := Validate(r, Env{}); !errors.Is(err, errs.Invalid) {
			t.Errorf("address %q, target %q: Validate = %v, want errs.Invalid", c.address, c.target, err)
		}
	}
}

func TestIsLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7000":   true,
		"[::1]:7000":       true,
		"localhost:7000":   true,
		"127.0.0.1":        true,
		"localhost":        true,
		"10.0.0.5:7000":    false,
		"node1:7000":       false,
		"[2001:db8::1]:70": false,
		"":                 false,
		// A server's Raft address must be dialable by its peers; the
		// unspecified address does not make a cluster one host.
		"0.0.0.0:7000": false,
	} {
		if got := IsLoopbackAddr(addr); got != want {
			t.Errorf("IsLoopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestNormalize(t *testing.T) {
	cases := []struct {
		name string
		in   Check
		want Check
	}{
		{"defaults", Check{Type: health.TypeHTTP, Target: "http://h/"},
			Check{Type: health.TypeHTTP, Target: "http://h/", Interval: DefaultInterval, Timeout: health.DefaultTimeout}},
		{"short interval caps timeout", Check{Type: health.TypeTCP, Target: "h:1", Interval: MinInterval},
			Check{Type: health.TypeTCP, Target: "h:1", Interval: MinInterval, Timeout: MinInterval}},
		{"1s interval", Check{Type: health.TypeTCP, Target: "h:1", Interval: time.Second},
			Check{Type: health.TypeTCP, Target: "h:1", Interval: time.Second, Timeout: time.Second}},
		{"long interval", Check{Type: health.TypeTCP, Target: "h:1", Interval: time.Minute},
			Check{Type: health.TypeTCP, Target: "h:1", Interval: time.Minute, Timeout: health.DefaultTimeout}},
		{"explicit timeout kept", Check{Type: health.TypeTCP, Target: "h:1", Interval: time.Minute, Timeout: 7 * time.Second},
			Check{Type: health.TypeTCP, Target: "h:1", Interval: time.Minute, Timeout: 7 * time.Second}},
		{"explicit interval, default timeout", Check{Type: health.TypeTCP, Target: "h:1", Timeout: 300 * time.Millisecond},
			Check{Type: health.TypeTCP, Target: "h:1", Interval: DefaultInterval, Timeout: 300 * time.Millisecond}},
		{"deregister kept", Check{Type: health.TypeTCP, Target: "h:1", DeregisterCriticalAfter: time.Hour},
			Check{Type: health.TypeTCP, Target: "h:1", Interval: DefaultInterval, Timeout: health.DefaultTimeout, DeregisterCriticalAfter: time.Hour}},
		{"no check untouched", Check{}, Check{}},
		{"ttl untouched", Check{Type: TypeTTL, TTL: time.Minute}, Check{Type: TypeTTL, TTL: time.Minute}},
		{"never untouched", Check{Type: TypeNever}, Check{Type: TypeNever}},
	}
	for _, c := range cases {
		r := &Record{Check: c.in}
		Normalize(r)
		if r.Check != c.want {
			t.Errorf("%s: Normalize(%+v) = %+v, want %+v", c.name, c.in, r.Check, c.want)
		}
		// Normalizing twice changes nothing.
		Normalize(r)
		if r.Check != c.want {
			t.Errorf("%s: second Normalize = %+v", c.name, r.Check)
		}
	}
	// A normalized record with a probed check validates.
	r := goodRecord()
	r.Check = Check{Type: health.TypeTCP, Target: "10.0.0.5:80", Interval: MinInterval}
	Normalize(r)
	if err := Validate(r, Env{}); err != nil {
		t.Fatalf("normalized record: %v", err)
	}
}

func TestRedacted(t *testing.T) {
	cases := []struct {
		name         string
		check        Check
		hidden       string // must not appear
		want         string // exact result, when not ""
		mustContains []string
	}{
		{"mysql password", Check{Type: health.TypeMySQL, Target: "app:s3cretpw@tcp(10.0.0.5:3306)/db"},
			"s3cretpw", "app:xxxxx@tcp(10.0.0.5:3306)/db", nil},
		{"mysql password with params", Check{Type: health.TypeMySQL, Target: "app:s3cretpw@tcp(10.0.0.5:3306)/db?timeout=5s"},
			"s3cretpw", "", []string{"app:xxxxx@tcp(10.0.0.5:3306)/db", "timeout=5s"}},
		{"mysql password with @", Check{Type: health.TypeMySQL, Target: "app:p@ss@tcp(10.0.0.5:3306)/db"},
			"p@ss", "", []string{"xxxxx", "10.0.0.5:3306"}},
		{"mysql no password", Check{Type: health.TypeMySQL, Target: "app@tcp(10.0.0.5:3306)/db"},
			"", "app@tcp(10.0.0.5:3306)/db", nil},
		{"postgres url", Check{Type: health.TypePgSQL, Target: "postgres://app:s3cretpw@10.0.0.5:5432/db?sslmode=disable"},
			"s3cretpw", "postgres://app:xxxxx@10.0.0.5:5432/db?sslmode=disable", nil},
		{"postgresql url", Check{Type: health.TypePgSQL, Target: "postgresql://app:s3cretpw@db.example/db"},
			"s3cretpw", "postgresql://app:xxxxx@db.example/db", nil},
		{"postgres url no password", Check{Type: health.TypePgSQL, Target: "postgres://app@10.0.0.5:5432/db"},
			"", "postgres://app@10.0.0.5:5432/db", nil},
		{"postgres url no user", Check{Type: health.TypePgSQL, Target: "postgres://10.0.0.5/db"},
			"", "postgres://10.0.0.5/db", nil},
		{"keyword password", Check{Type: health.TypePgSQL, Target: "host=10.0.0.5 user=app password=secret dbname=db"},
			"secret", "host=10.0.0.5 user=app password=xxxxx dbname=db", nil},
		{"keyword password quoted", Check{Type: health.TypePgSQL, Target: "host=10.0.0.5 password='a b' user=app"},
			"a b", "host=10.0.0.5 password=xxxxx user=app", nil},
		{"keyword password quoted with escape", Check{Type: health.TypePgSQL, Target: `host=h password='it\'s secret' user=app`},
			"secret", `host=h password=xxxxx user=app`, nil},
		{"keyword password spaced", Check{Type: health.TypePgSQL, Target: "host=h password = secret user=app"},
			"secret", "host=h password = xxxxx user=app", nil},
		{"keyword password last", Check{Type: health.TypePgSQL, Target: "host=h password=secret"},
			"secret", "host=h password=xxxxx", nil},
		{"keyword PASSWORD", Check{Type: health.TypePgSQL, Target: "host=h PASSWORD=secret"},
			"secret", "host=h PASSWORD=xxxxx", nil},
		{"keyword no password", Check{Type: health.TypePgSQL, Target: "host=10.0.0.5 user=app dbname=db"},
			"", "host=10.0.0.5 user=app dbname=db", nil},
		{"http userinfo", Check{Type: health.TypeHTTP, Target: "http://admin:s3cretpw@10.0.0.5:8080/health?x=1"},
			"s3cretpw", "http://admin:xxxxx@10.0.0.5:8080/health?x=1", nil},
		{"web userinfo", Check{Type: health.TypeWeb, Target: "https://admin:s3cretpw@10.0.0.5/"},
			"s3cretpw", "https://admin:xxxxx@10.0.0.5/", nil},
		{"http no userinfo", Check{Type: health.TypeHTTP, Target: "http://10.0.0.5:8080/health"},
			"", "http://10.0.0.5:8080/health", nil},
		{"http user only", Check{Type: health.TypeHTTP, Target: "http://admin@10.0.0.5/"},
			"", "http://admin@10.0.0.5/", nil},
		{"tcp", Check{Type: health.TypeTCP, Target: "10.0.0.5:5432"}, "", "10.0.0.5:5432", nil},
		{"script", Check{Type: health.TypeScript, Target: "/bin/check --password=x"}, "", "/bin/check --password=x", nil},
		{"no check", Check{}, "", "", nil},
	}
	for _, c := range cases {
		got := Redacted(c.check)
		if c.hidden != "" && strings.Contains(got, c.hidden) {
			t.Errorf("%s: Redacted(%q) = %q shows %q", c.name, c.check.Target, got, c.hidden)
		}
		if c.want != "" && got != c.want {
			t.Errorf("%s: Redacted(%q) = %q, want %q", c.name, c.check.Target, got, c.want)
		}
		if c.want == "" && c.mustContains == nil && got != c.check.Target {
			t.Errorf("%s: Redacted(%q) = %q, want it unchanged", c.name, c.check.Target, got)
		}
		for _, s := range c.mustContains {
			if !strings.Contains(got, s) {
				t.Errorf("%s: Redacted(%q) = %q, want it to contain %q", c.name, c.check.Target, got, s)
			}
		}
	}
}

// TestRedactedPgURLQueryPassword: pgx also takes the password from a URL's
// query (postgres://u@h/db?password=...). Redacted must hide it whether or
// not the URL has userinfo.
func TestRedactedPgURLQueryPassword(t *testing.T) {
	for _, target := range []string{
		"postgres://10.0.0.5:5432/db?password=s3cretpw",
		"postgres://app@10.0.0.5:5432/db?password=s3cretpw",
		"postgres://app@10.0.0.5:5432/db?sslmode=disable&password=s3cretpw",
		"postgres://app:other@10.0.0.5:5432/db?password=s3cretpw",
	} {
		if got := Redacted(Check{Type: health.TypePgSQL, Target: target}); strings.Contains(got, "s3cretpw") {
			t.Errorf("Redacted(%q) = %q shows the password", target, got)
		}
	}
}
