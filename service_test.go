package dister_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// instanceStatus reads one instance's status through node n.
func instanceStatus(t *testing.T, s *dister.Services, service, id string) dister.HealthStatus {
	t.Helper()
	insts, err := s.Get(ctxT(t), service, dister.WithRead(dister.Linearizable()))
	if err != nil {
		t.Fatalf("get %s: %v", service, err)
	}
	for _, in := range insts {
		if in.ID == id {
			return in.Status
		}
	}
	return ""
}

func waitStatus(t *testing.T, s *dister.Services, service, id string, want dister.HealthStatus) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := instanceStatus(t, s, service, id)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s is %q after 20s, want %q", service, id, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServiceRegisterGetListDeregister(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	for _, in := range []dister.Instance{
		{Service: "web", ID: "a", Address: "127.0.0.1:8001", Priority: 3, Tags: []string{"v1"}, Meta: map[string]string{"zone": "z1"}},
		{Service: "web", ID: "b", Address: "127.0.0.1:8002", Priority: 1},
		{Service: "db", ID: "x", Address: "http://127.0.0.1:5432/"},
	} {
		if err := s.Register(ctx, in); err != nil {
			t.Fatalf("register %s/%s: %v", in.Service, in.ID, err)
		}
	}
	// Read through another server: the registration is committed.
	got, err := c.Node(2).Services().Get(ctx, "web", dister.WithRead(dister.Linearizable()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" {
		t.Fatalf("web = %+v", got)
	}
	a := got[0]
	if a.Priority != 3 || a.Tags[0] != "v1" || a.Meta["zone"] != "z1" || a.Status != dister.StatusPassing || a.ModRevision == 0 {
		t.Fatalf("web/a = %+v", a)
	}
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []dister.ServiceInfo{{Name: "db", Instances: 1, Passing: 1}, {Name: "web", Instances: 2, Passing: 2}}
	if len(list) != 2 || list[0] != want[0] || list[1] != want[1] {
		t.Fatalf("List = %+v, want %+v", list, want)
	}
	all, err := s.All(ctx)
	if err != nil || len(all) != 3 || all[0].Service != "db" || all[1].ID != "a" || all[2].ID != "b" {
		t.Fatalf("All = %+v, %v; want db/x, web/a, web/b", all, err)
	}
	// Replace: same id, new address.
	if err := s.Register(ctx, dister.Instance{Service: "web", ID: "b", Address: "127.0.0.1:9002", Priority: 5}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Get(ctx, "web")
	if len(got) != 2 || got[1].Address != "127.0.0.1:9002" || got[1].Priority != 5 {
		t.Fatalf("after replace: %+v", got)
	}
	if err := s.Deregister(ctx, "web", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Deregister(ctx, "web", "a"); !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("second deregister: %v, want ErrNotFound", err)
	}
	got, _ = s.Get(ctx, "web")
	if len(got) != 1 || got[0].ID != "b" {
		t.Fatalf("after deregister: %+v", got)
	}
	// Services are invisible to KV.
	kvs, _, err := c.Node(1).KV().List(ctx, "")
	if err != nil || len(kvs) != 0 {
		t.Fatalf("KV list shows %d entries (%v), want none", len(kvs), err)
	}
	if _, err := c.Node(1).KV().Delete(ctx, "", dister.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "web"); len(got) != 1 {
		t.Fatalf("a KV delete of every key removed instances: %+v", got)
	}
}

func TestServiceRegisterValidation(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	good := dister.Instance{Service: "web", ID: "a", Address: "127.0.0.1:80"}
	bad := map[string]func(*dister.Instance){
		"empty service":    func(i *dister.Instance) { i.Service = "" },
		"slash in service": func(i *dister.Instance) { i.Service = "a/b" },
		"NUL in id":        func(i *dister.Instance) { i.ID = "a\x00" },
		"long id":          func(i *dister.Instance) { i.ID = strings.Repeat("x", dister.MaxNameLen+1) },
		"no address":       func(i *dister.Instance) { i.Address = "" },
		"address no port":  func(i *dister.Instance) { i.Address = "host" },
		"address bad port": func(i *dister.Instance) { i.Address = "host:99999" },
		"negative prio":    func(i *dister.Instance) { i.Priority = -1 },
		"unknown check":    func(i *dister.Instance) { i.Check = dister.Check{Type: "smtp", Target: "x"} },
		"interval too small": func(i *dister.Instance) {
			i.Check = dister.Check{Type: dister.CheckTCP, Target: "127.0.0.1:1", Interval: time.Millisecond}
		},
		"timeout over interval": func(i *dister.Instance) {
			i.Check = dister.Check{Type: dister.CheckTCP, Target: "127.0.0.1:1", Interval: time.Second, Timeout: 2 * time.Second}
		},
		"http target not a URL": func(i *dister.Instance) { i.Check = dister.Check{Type: dister.CheckHTTP, Target: "127.0.0.1:80"} },
		"ttl too short":         func(i *dister.Instance) { i.Check = dister.Check{Type: dister.CheckTTL, TTL: 10 * time.Millisecond} },
		"script while disabled": func(i *dister.Instance) { i.Check = dister.Check{Type: dister.CheckScript, Target: "true"} },
		"custom while disabled": func(i *dister.Instance) { i.Check = dister.Check{Type: dister.CheckCustom, Target: "echo 1"} },
	}
	for name, mutate := range bad {
		in := good
		mutate(&in)
		if err := s.Register(ctx, in); !errors.Is(err, dister.ErrInvalid) {
			t.Errorf("%s: Register = %v, want ErrInvalid", name, err)
		}
	}
	if l, _ := s.List(ctx); len(l) != 0 {
		t.Fatalf("rejected registrations left %+v", l)
	}
	if err := s.Register(ctx, good); err != nil {
		t.Fatal(err)
	}
}

func TestServiceWatch(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	wctx, cancel := context.WithCancel(ctx)
	events := c.Node(3).Services().Watch(wctx, "api")
	first := <-events
	if first.Err != nil || len(first.Instances) != 0 {
		t.Fatalf("first event %+v, want the empty set", first)
	}
	s := c.Node(1).Services()
	if err := s.Register(ctx, dister.Instance{Service: "api", ID: "1", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(ctx, dister.Instance{Service: "other", ID: "1", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(ctx, dister.Instance{Service: "api", ID: "2", Address: "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Deregister(ctx, "api", "1"); err != nil {
		t.Fatal(err)
	}
	var sets [][]string
	for len(sets) < 3 {
		ev := <-events
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
		var ids []string
		for _, in := range ev.Instances {
			ids = append(ids, in.ID)
		}
		sets = append(sets, ids)
	}
	want := "[[1] [1 2] [2]]"
	if got := fmtSets(sets); got != want {
		t.Fatalf("sets %s, want %s", got, want)
	}
	// KV watchers never see services.
	kvEvents := c.Node(2).KV().Watch(wctx, "")
	if err := s.Register(ctx, dister.Instance{Service: "api", ID: "3", Address: "127.0.0.1:3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Node(1).KV().Put(ctx, "marker", nil); err != nil {
		t.Fatal(err)
	}
	if ev := <-kvEvents; ev.Err != nil || ev.Entry.Key != "marker" {
		t.Fatalf("KV watch got %+v before the marker", ev)
	}
	cancel()
	for range events {
	}
}

func fmtSets(sets [][]string) string {
	var b strings.Builder
	b.WriteString("[")
	for i, s := range sets {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString("[" + strings.Join(s, " ") + "]")
	}
	b.WriteString("]")
	return b.String()
}

// An HTTP instance turns critical when its server stops and passing when it
// is back; Pick follows.
func TestServiceHTTPCheckAndPick(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	srv := serveOK(t, "127.0.0.1:0")
	addr := srv.Listener.Addr().String()
	s := c.Node(1).Services()
	check := dister.Check{Type: dister.CheckHTTP, Target: "http://" + addr + "/health", Interval: 200 * time.Millisecond}
	if err := s.Register(ctx, dister.Instance{Service: "web", ID: "h", Address: addr, Priority: 1, Check: check}); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(ctx, dister.Instance{Service: "web", ID: "standby", Address: "127.0.0.1:1", Priority: 0}); err != nil {
		t.Fatal(err)
	}
	b := c.Node(2).Balancer()
	waitStatus(t, s, "web", "h", dister.StatusPassing)
	waitFor(t, func() bool {
		in, err := b.Pick(ctx, "web")
		return err == nil && in.ID == "h"
	})
	for range 100 {
		if in, err := b.Pick(ctx, "web"); err != nil || in.ID != "h" {
			t.Fatalf("Pick = %v, %v; want h while it passes (the other is a standby)", in.ID, err)
		}
	}
	srv.Close()
	waitStatus(t, s, "web", "h", dister.StatusCritical)
	waitFor(t, func() bool {
		in, err := b.Pick(ctx, "web")
		return err == nil && in.ID == "standby"
	})
	// Back on the same address.
	serveOK(t, addr)
	waitStatus(t, s, "web", "h", dister.StatusPassing)
	waitFor(t, func() bool {
		in, err := b.Pick(ctx, "web")
		return err == nil && in.ID == "h"
	})
}

func TestServiceReplace(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	for _, id := range []string{"old1", "old2"} {
		if err := s.Register(ctx, dister.Instance{Service: "r", ID: id, Address: "127.0.0.1:1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Register(ctx, dister.Instance{Service: "keep", ID: "k", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	// A bad instance anywhere rejects the whole replacement.
	bad := []dister.Instance{{Service: "r", ID: "new1", Address: "127.0.0.1:2"}, {Service: "r", ID: "new2", Address: "nope"}}
	if err := s.Replace(ctx, []string{"r"}, bad); !errors.Is(err, dister.ErrInvalid) {
		t.Fatalf("replace with a bad address: %v", err)
	}
	if err := s.Replace(ctx, []string{"r"}, []dister.Instance{{Service: "other", ID: "x", Address: "127.0.0.1:2"}}); !errors.Is(err, dister.ErrInvalid) {
		t.Fatalf("replace with an instance of an unnamed service: %v", err)
	}
	ttl := dister.Instance{Service: "r", ID: "t", Address: "127.0.0.1:2", Check: dister.Check{Type: dister.CheckTTL, TTL: time.Second}}
	if err := s.Replace(ctx, []string{"r"}, []dister.Instance{ttl}); !errors.Is(err, dister.ErrInvalid) {
		t.Fatalf("replace with a ttl instance: %v", err)
	}
	if got, _ := s.Get(ctx, "r"); len(got) != 2 {
		t.Fatalf("failed replacements changed the set: %+v", got)
	}
	never := dister.Instance{Service: "r", ID: "n", Extra: []byte(`{"type":"ftp"}`), Check: dister.Check{Type: dister.CheckNever}}
	if err := s.Replace(ctx, []string{"r"}, []dister.Instance{{Service: "r", ID: "new1", Address: "127.0.0.1:2"}, never}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx, "r")
	if len(got) != 2 || got[0].ID != "n" || got[1].ID != "new1" || string(got[0].Extra) != `{"type":"ftp"}` || got[0].Status != dister.StatusCritical {
		t.Fatalf("after replace: %+v", got)
	}
	if got, _ := s.Get(ctx, "keep"); len(got) != 1 {
		t.Fatalf("replace touched another service: %+v", got)
	}
	// A never-checked instance is never picked.
	if err := s.Replace(ctx, []string{"r"}, []dister.Instance{never}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * fastCheck)
	if _, err := c.Node(1).Balancer().Pick(ctx, "r"); !errors.Is(err, dister.ErrNoInstance) {
		t.Fatalf("pick with only a never-checked instance: %v", err)
	}
}

// The one-host rule: a server on a non-loopback address refuses loopback
// instance addresses and check targets, which its leader could not reach
// from another host.
func TestServiceLoopbackNeedsOneHost(t *testing.T) {
	var ip string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			ip = n.IP.String()
			break
		}
	}
	if ip == "" {
		t.Skip("no non-loopback IPv4 address on this machine")
	}
	free := func() string {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("cannot listen on %s: %v", ip, err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	ctx := ctxT(t)
	// Not loopback and no certificates: the transport rule wants this said.
	n, err := dister.Open(ctx, dister.Options{NodeID: 1, DataDir: t.TempDir(), RaftAddr: free(), PeerAddr: free(),
		InsecureTransport: true, Logger: testcluster.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	s := n.Services()
	for _, in := range []dister.Instance{
		{Service: "a", ID: "1", Address: "127.0.0.1:80"},
		{Service: "a", ID: "2", Address: "http://localhost:80/"},
		{Service: "a", ID: "3", Address: ip + ":80", Check: dister.Check{Type: dister.CheckTCP, Target: "[::1]:80"}},
	} {
		if err := s.Register(ctx, in); !errors.Is(err, dister.ErrInvalid) {
			t.Errorf("register %+v on a multi-host cluster: %v, want ErrInvalid", in, err)
		}
	}
	if err := s.Register(ctx, dister.Instance{Service: "a", ID: "4", Address: ip + ":80"}); err != nil {
		t.Fatal(err)
	}
}

// Registrations of one instance racing through different servers all
// succeed (a lost CAS is retried on a fresher read) and leave one record:
// the last one committed.
func TestServiceConcurrentRegisterSameInstance(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	errs := make(chan error, 60)
	for w := range 60 {
		go func() {
			s := c.Node(uint64(w%3 + 1)).Services()
			errs <- s.Register(ctx, dister.Instance{Service: "race", ID: "one", Address: "127.0.0.1:1", Priority: w})
		}()
	}
	for range 60 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Node(1).Services().Get(ctx, "race", dister.WithRead(dister.Linearizable()))
	if err != nil || len(got) != 1 {
		t.Fatalf("after racing registrations: %+v, %v", got, err)
	}
}

// serveOK serves 200 to every request on addr ("127.0.0.1:0" = any port)
// until the test ends or the caller closes it.
func serveOK(t *testing.T, addr string) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}
