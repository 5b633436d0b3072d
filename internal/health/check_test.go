package health

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister/internal/errs"
)

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{Passing: "passing", Warning: "warning", Critical: "critical", 0: "unknown"} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
		if s != 0 {
			if back, err := ParseStatus(want); err != nil || back != s {
				t.Errorf("ParseStatus(%q) = %v, %v", want, back, err)
			}
		}
	}
	if _, err := ParseStatus("dead"); !errors.Is(err, errs.Invalid) {
		t.Errorf("ParseStatus(dead) err = %v", err)
	}
}

func TestValidate(t *testing.T) {
	ok := []Check{
		{Type: TypeHTTP, Target: "http://127.0.0.1:8080/health"},
		{Type: TypeWeb, Target: "https://example.com"},
		{Type: TypeTCP, Target: "127.0.0.1:22", Timeout: 3 * time.Second},
		{Type: TypeTCP, Target: "[::1]:5432"},
		{Type: TypeMySQL, Target: "u:p@tcp(127.0.0.1:3306)/db"},
		{Type: TypePgSQL, Target: "postgres://u:p@127.0.0.1:5432/db"},
		{Type: TypePgSQL, Target: "host=127.0.0.1 user=u password=p dbname=db"},
	}
	for _, c := range ok {
		if err := c.Validate(false); err != nil {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
	bad := []struct {
		c    Check
		want string
	}{
		{Check{Type: "", Target: "x"}, "check type is empty"},
		{Check{Type: "ping", Target: "x"}, `unknown check type "ping"`},
		{Check{Type: TypeHTTP}, "empty target"},
		{Check{Type: TypeHTTP, Target: "ftp://h/x"}, "scheme must be http or https"},
		{Check{Type: TypeHTTP, Target: "http:///x"}, "has no host"},
		{Check{Type: TypeHTTP, Target: "http://h/\x7f"}, "not a URL"},
		{Check{Type: TypeWeb, Target: "http://h/", Timeout: -1}, "timeout"},
		{Check{Type: TypeWeb, Target: "http://h/", Timeout: 2 * time.Minute}, "timeout 2m0s outside"},
		{Check{Type: TypeTCP, Target: "127.0.0.1"}, "not host:port"},
		{Check{Type: TypeTCP, Target: ":80"}, "has no host"},
		{Check{Type: TypeTCP, Target: "h:http"}, "port must be a number"},
		{Check{Type: TypeTCP, Target: "h:70000"}, "port must be a number"},
		{Check{Type: TypeMySQL, Target: "not a dsn"}, "not a go-sql-driver DSN"},
		{Check{Type: TypePgSQL, Target: "postgres://h:notaport/db"}, "not a pgx connection string"},
		{Check{Type: TypeTCP, Target: strings.Repeat("h", MaxTargetLen) + ":1"}, "more than 4096"},
	}
	for _, b := range bad {
		err := b.c.Validate(true)
		if !errors.Is(err, errs.Invalid) || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Validate(%+v) = %v, want errs.Invalid mentioning %q", b.c, err, b.want)
		}
	}
}

func TestValidateRedactsPasswords(t *testing.T) {
	for _, c := range []Check{
		{Type: TypeHTTP, Target: "ftp://u:s3cret@h/"},
		{Type: TypePgSQL, Target: "postgres://u:s3cret@h:notaport/db"},
	} {
		if err := c.Validate(true); err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Validate(%s) = %v: want an error without the password", c.Type, err)
		}
	}
}

func TestValidateScriptNeedsSetting(t *testing.T) {
	for _, typ := range []string{TypeScript, TypeCustom} {
		c := Check{Type: typ, Target: "/bin/true"}
		err := c.Validate(false)
		if !errors.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "disabled") || !strings.Contains(err.Error(), "cluster setting") {
			t.Errorf("%s with scripts off: %v, want a refusal naming the cluster setting", typ, err)
		}
		if err := c.Validate(true); err != nil {
			t.Errorf("%s with scripts on: %v", typ, err)
		}
		if err := (Check{Type: typ, Target: `echo "unclosed`}).Validate(true); !errors.Is(err, errs.Invalid) {
			t.Errorf("%s with an unclosed quote: %v", typ, err)
		}
	}
}

func TestSplitCommand(t *testing.T) {
	cases := map[string][]string{
		`echo $HOME`:                 {"echo", "$HOME"},
		`  a   b	c `:                 {"a", "b", "c"},
		`sh -c 'exit 2'`:             {"sh", "-c", "exit 2"},
		`printf "%s\n" "a \"b\" \c"`: {"printf", `%s\n`, `a "b" \c`},
		`a\ b c''d ""`:               {"a b", "cd", ""},
		`'it''s'`:                    {"its"},
	}
	for in, want := range cases {
		got, err := SplitCommand(in)
		if err != nil || strings.Join(got, "|") != strings.Join(want, "|") || len(got) != len(want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "   ", `'a`, `"a`, `a\`} {
		if _, err := SplitCommand(in); !errors.Is(err, errs.Invalid) {
			t.Errorf("SplitCommand(%q) err = %v, want errs.Invalid", in, err)
		}
	}
}

func TestCut(t *testing.T) {
	s := strings.Repeat("é", MaxOutput) // 2 bytes each
	got := cut(s)
	if len(got) > MaxOutput || !strings.HasSuffix(got, "(cut)") {
		t.Fatalf("cut: len %d, suffix %q", len(got), got[len(got)-10:])
	}
	if !strings.HasPrefix(got, "éé") || strings.ContainsRune(got, '\uFFFD') {
		t.Fatal("cut split a rune")
	}
	if cut("short") != "short" {
		t.Fatal("cut changed a short string")
	}
}
