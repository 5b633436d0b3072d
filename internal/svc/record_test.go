package svc

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/health"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	records := []*Record{
		{
			Service: "web", ID: "i-1", Address: "10.0.0.5:8080", Priority: 3,
			Tags: []string{"a", "b"}, Meta: map[string]string{"zone": "eu", "": "x"},
			Check: Check{Type: health.TypeHTTP, Target: "http://10.0.0.5:8080/h",
				Interval: 1500 * time.Millisecond, Timeout: 250 * time.Millisecond,
				DeregisterCriticalAfter: 90 * time.Minute},
			Status: Warning, Output: "GET: 429", LastCheckedMs: 1_700_000_000_123,
			Extra: []byte{0, 1, 2, 0xff, '"', '\\', 0x80},
		},
		{
			Service: "db", ID: "x", Check: Check{Type: TypeTTL, TTL: 30 * time.Second},
			Status: Passing, Output: "registered", LastCheckedMs: 1, Lease: 42,
		},
		{Service: "legacy", ID: "n1", Check: Check{Type: TypeNever}, Status: Critical,
			Extra: []byte(`{"node":{"password":"p"}}`)},
		{Service: "s", ID: "i"}, // zero check, zero everything
	}
	for _, r := range records {
		b, err := r.Encode()
		if err != nil {
			t.Fatalf("Encode(%+v): %v", r, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%s): %v", b, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip:\n got %+v\nwant %+v\n(%s)", got, r, b)
		}
	}
}

// TestEncodeStoredForm: the stored form keeps durations as integer
// milliseconds (independent of Go's duration syntax) and omits zero ones.
func TestEncodeStoredForm(t *testing.T) {
	r := &Record{Service: "web", ID: "1", Check: Check{Type: health.TypeTCP, Target: "h:1",
		Interval: 2 * time.Second, Timeout: 100 * time.Millisecond, DeregisterCriticalAfter: time.Minute}}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	chk, _ := m["check"].(map[string]any)
	want := map[string]any{"type": "tcp", "target": "h:1", "interval_ms": 2000.0, "timeout_ms": 100.0,
		"deregister_critical_after_ms": 60000.0}
	if !reflect.DeepEqual(chk, want) {
		t.Fatalf("stored check = %v, want %v", chk, want)
	}
	// Sub-millisecond parts are dropped, not rounded into garbage.
	r.Check.Interval = 2*time.Second + 999*time.Microsecond
	b, _ = r.Encode()
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Check.Interval != 2*time.Second {
		t.Fatalf("interval %v, want 2s", got.Check.Interval)
	}
}

func TestDecodeGarbage(t *testing.T) {
	for _, b := range []string{
		"", "not json", "{", `[]`, `"string"`, `{"check": 5}`, `{"check": {"interval_ms": "x"}}`,
		`{"priority": "high"}`, `{"tags": "a"}`, `{"extra": "not base64!"}`, "\x00\x01",
	} {
		r, err := Decode([]byte(b))
		if !errors.Is(err, errs.Invalid) {
			t.Errorf("Decode(%q) = %+v, %v; want errs.Invalid", b, r, err)
		}
		if r != nil {
			t.Errorf("Decode(%q) returned a record with its error", b)
		}
	}
}

func TestLastChecked(t *testing.T) {
	if got := (&Record{}).LastChecked(); !got.IsZero() {
		t.Fatalf("never checked: %v, want zero", got)
	}
	now := time.UnixMilli(1_700_000_000_123)
	r := &Record{LastCheckedMs: now.UnixMilli()}
	if got := r.LastChecked(); !got.Equal(now) {
		t.Fatalf("LastChecked = %v, want %v", got, now)
	}
}

func TestInitialStatus(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	cases := []struct {
		typ        string
		status     string
		output     string
		lastChecks int64
	}{
		{"", Passing, "", 0},
		{TypeTTL, Passing, "registered", now.UnixMilli()},
		{health.TypeHTTP, Critical, OutputNotChecked, 0},
		{health.TypeWeb, Critical, OutputNotChecked, 0},
		{health.TypeTCP, Critical, OutputNotChecked, 0},
		{health.TypeMySQL, Critical, OutputNotChecked, 0},
		{health.TypePgSQL, Critical, OutputNotChecked, 0},
		{health.TypeScript, Critical, OutputNotChecked, 0},
		{health.TypeCustom, Critical, OutputNotChecked, 0},
		{TypeNever, Critical, "", 0},
	}
	for _, c := range cases {
		// Start from a record that carries a stale status, as a
		// re-registration does.
		r := &Record{Check: Check{Type: c.typ}, Status: Warning, Output: "old", LastCheckedMs: 99}
		r.InitialStatus(now)
		if r.Status != c.status || r.LastCheckedMs != c.lastChecks {
			t.Errorf("type %q: status %q last %d, want %q %d", c.typ, r.Status, r.LastCheckedMs, c.status, c.lastChecks)
		}
		if c.typ != TypeNever && r.Output != c.output {
			t.Errorf("type %q: output %q, want %q", c.typ, r.Output, c.output)
		}
		if c.typ == TypeNever && r.Output == "old" {
			t.Errorf("type never: output %q kept from before", r.Output)
		}
	}
}

func TestProbed(t *testing.T) {
	for typ, want := range map[string]bool{
		"": false, TypeTTL: false, TypeNever: false, "gopher": false,
		health.TypeHTTP: true, health.TypeWeb: true, health.TypeTCP: true, health.TypeMySQL: true,
		health.TypePgSQL: true, health.TypeScript: true, health.TypeCustom: true,
	} {
		if got := (Check{Type: typ}).Probed(); got != want {
			t.Errorf("Probed(%q) = %v, want %v", typ, got, want)
		}
	}
}

func TestCheckProbe(t *testing.T) {
	c := Check{Type: health.TypeTCP, Target: "h:1", Interval: time.Minute, Timeout: 3 * time.Second,
		TTL: time.Hour, DeregisterCriticalAfter: time.Hour}
	want := health.Check{Type: health.TypeTCP, Target: "h:1", Timeout: 3 * time.Second}
	if got := c.Probe(); got != want {
		t.Fatalf("Probe() = %+v, want %+v", got, want)
	}
}

func TestKeys(t *testing.T) {
	if got := InstanceKey("web", "i-1"); got != "\x00svc/web/i-1" {
		t.Errorf("InstanceKey = %q", got)
	}
	if got := HeartbeatKey("web", "i-1"); got != "\x00hb/web/i-1" {
		t.Errorf("HeartbeatKey = %q", got)
	}
	if got := ServicePrefix("web"); got != "\x00svc/web/" {
		t.Errorf("ServicePrefix = %q", got)
	}
	if !strings.HasPrefix(InstanceKey("web", "i-1"), ServicePrefix("web")) {
		t.Error("an instance key is not under its service prefix")
	}
	// A service's prefix holds its own instances only, not those of a
	// service whose name it starts.
	if strings.HasPrefix(InstanceKey("web2", "i-1"), ServicePrefix("web")) {
		t.Error("web2's instance is under web's prefix")
	}
	if strings.HasPrefix(HeartbeatKey("web", "i-1"), InstancesPrefix) ||
		strings.HasPrefix(InstanceKey("web", "i-1"), HeartbeatsPrefix) {
		t.Error("instance and heartbeat namespaces overlap")
	}

	cases := []struct {
		key         string
		service, id string
		ok          bool
	}{
		{InstanceKey("web", "i-1"), "web", "i-1", true},
		{HeartbeatKey("web", "i-1"), "web", "i-1", true},
		{InstanceKey("a.b-c", "x_y.z"), "a.b-c", "x_y.z", true},
		{"\x00svc/web", "", "", false},
		{"\x00hb/web", "", "", false},
		{"web/i-1", "", "", false},
		{"svc/web/i-1", "", "", false},
		{"\x00other/web/i-1", "", "", false},
		{"", "", "", false},
	}
	for _, c := range cases {
		s, id, ok := SplitKey(c.key)
		if ok != c.ok || (ok && (s != c.service || id != c.id)) {
			t.Errorf("SplitKey(%q) = %q, %q, %v; want %q, %q, %v", c.key, s, id, ok, c.service, c.id, c.ok)
		}
	}
	// Round trip through every valid-looking pair.
	for _, p := range [][2]string{{"s", "i"}, {"svc", "hb"}, {"_", "0"}} {
		for _, k := range []string{InstanceKey(p[0], p[1]), HeartbeatKey(p[0], p[1])} {
			if s, id, ok := SplitKey(k); !ok || s != p[0] || id != p[1] {
				t.Errorf("SplitKey(%q) = %q, %q, %v", k, s, id, ok)
			}
		}
	}
}

func TestSameCheck(t *testing.T) {
	base := func() *Record {
		return &Record{Service: "web", ID: "1", Address: "10.0.0.5:80", Priority: 1, Tags: []string{"a"},
			Check:  Check{Type: health.TypeHTTP, Target: "http://10.0.0.5/", Interval: time.Second, Timeout: time.Second},
			Status: Passing, Output: "ok", LastCheckedMs: 5, Lease: 3, Extra: []byte("x")}
	}
	same := map[string]func(r *Record){
		"identical":      func(r *Record) {},
		"status":         func(r *Record) { r.Status, r.Output, r.LastCheckedMs = Critical, "down", 9 },
		"priority, tags": func(r *Record) { r.Priority, r.Tags = 7, []string{"b", "c"} },
		"meta, extra":    func(r *Record) { r.Meta, r.Extra = map[string]string{"k": "v"}, nil },
		"lease":          func(r *Record) { r.Lease = 0 },
	}
	different := map[string]func(r *Record){
		"address":    func(r *Record) { r.Address = "10.0.0.6:80" },
		"type":       func(r *Record) { r.Check.Type = health.TypeWeb },
		"target":     func(r *Record) { r.Check.Target = "http://10.0.0.5/other" },
		"interval":   func(r *Record) { r.Check.Interval = 2 * time.Second },
		"timeout":    func(r *Record) { r.Check.Timeout = 500 * time.Millisecond },
		"deregister": func(r *Record) { r.Check.DeregisterCriticalAfter = time.Minute },
		"ttl":        func(r *Record) { r.Check = Check{Type: TypeTTL, TTL: time.Second} },
		"no check":   func(r *Record) { r.Check = Check{} },
	}
	for name, edit := range same {
		b := base()
		edit(b)
		if !SameCheck(base(), b) || !SameCheck(b, base()) {
			t.Errorf("%s: SameCheck = false, want true", name)
		}
	}
	for name, edit := range different {
		b := base()
		edit(b)
		if SameCheck(base(), b) || SameCheck(b, base()) {
			t.Errorf("%s: SameCheck = true, want false", name)
		}
	}
}
