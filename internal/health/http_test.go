package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func newProber(t *testing.T, o Options) *Prober {
	t.Helper()
	p := NewProber(o)
	t.Cleanup(func() { p.Close() })
	return p
}

func codeServer(t *testing.T, code int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		_, _ = w.Write([]byte("reason here"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPAndWebCodes(t *testing.T) {
	p := newProber(t, Options{OutputBody: true})
	quiet := newProber(t, Options{})
	cases := []struct {
		code      int
		http, web Status
	}{
		{200, Passing, Passing},
		{204, Passing, Critical},
		{429, Warning, Critical},
		{500, Critical, Critical},
		{404, Critical, Critical},
	}
	for _, c := range cases {
		srv := codeServer(t, c.code)
		for typ, want := range map[string]Status{TypeHTTP: c.http, TypeWeb: c.web} {
			r := p.Probe(context.Background(), Check{Type: typ, Target: srv.URL + "/health"})
			if r.Status != want {
				t.Errorf("%s on %d = %v (%s), want %v", typ, c.code, r.Status, r.Output, want)
			}
			if !strings.Contains(r.Output, http.StatusText(c.code)) {
				t.Errorf("%s on %d: output %q lacks the status", typ, c.code, r.Output)
			}
			if want != Passing && c.code != 204 && !strings.Contains(r.Output, "reason here") {
				t.Errorf("%s on %d: output %q lacks the body", typ, c.code, r.Output)
			}
			// Without OutputBody the body never shows.
			r = quiet.Probe(context.Background(), Check{Type: typ, Target: srv.URL + "/health"})
			if r.Status != want || strings.Contains(r.Output, "reason here") {
				t.Errorf("%s on %d without OutputBody: %v %q", typ, c.code, r.Status, r.Output)
			}
		}
	}
}

func TestHTTPServerStopped(t *testing.T) {
	p := newProber(t, Options{})
	srv := codeServer(t, 200)
	c := Check{Type: TypeHTTP, Target: srv.URL}
	if r := p.Probe(context.Background(), c); r.Status != Passing {
		t.Fatalf("running server: %v %s", r.Status, r.Output)
	}
	srv.Close()
	r := p.Probe(context.Background(), c)
	if r.Status != Critical || !strings.Contains(r.Output, "refused") {
		t.Fatalf("stopped server: %v %q, want critical, connection refused", r.Status, r.Output)
	}
}

func TestHTTPSlowServerTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	p := newProber(t, Options{})
	for _, typ := range []string{TypeHTTP, TypeWeb} {
		start := time.Now()
		r := p.Probe(context.Background(), Check{Type: typ, Target: srv.URL, Timeout: 200 * time.Millisecond})
		el := time.Since(start)
		if r.Status != Critical || !strings.Contains(r.Output, "timed out after 200ms") {
			t.Errorf("%s slow server: %v %q", typ, r.Status, r.Output)
		}
		if el > time.Second || r.Took < 200*time.Millisecond {
			t.Errorf("%s slow server: took %v (Took %v), want about 200ms", typ, el, r.Took)
		}
	}
}

func TestHTTPRedirects(t *testing.T) {
	other := codeServer(t, 200)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/other":
			http.Redirect(w, r, other.URL+"/ok", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		default:
			w.WriteHeader(200)
		}
	}))
	defer srv.Close()
	p := newProber(t, Options{})
	for path, want := range map[string]Status{"/same": Passing, "/other": Critical, "/loop": Critical} {
		r := p.Probe(context.Background(), Check{Type: TypeHTTP, Target: srv.URL + path})
		if r.Status != want {
			t.Errorf("%s: %v %q, want %v", path, r.Status, r.Output, want)
		}
		if want == Critical && !strings.Contains(r.Output, "not followed") {
			t.Errorf("%s: output %q does not say the redirect was not followed", path, r.Output)
		}
	}
}

func TestHTTPOutputRedactsPassword(t *testing.T) {
	srv := codeServer(t, 500)
	p := newProber(t, Options{})
	target := strings.Replace(srv.URL, "http://", "http://user:s3cret@", 1)
	r := p.Probe(context.Background(), Check{Type: TypeHTTP, Target: target})
	if r.Status != Critical || strings.Contains(r.Output, "s3cret") {
		t.Fatalf("%v %q: want critical without the password", r.Status, r.Output)
	}
	srv.Close()
	r = p.Probe(context.Background(), Check{Type: TypeHTTP, Target: target})
	if r.Status != Critical || strings.Contains(r.Output, "s3cret") {
		t.Fatalf("%v %q: want critical without the password", r.Status, r.Output)
	}
}

// TestHTTPOutputHasNoSecrets: the output of an http probe is shown to
// anyone who can read the registry; the target's password, query values
// and a redirect's query must not appear in it. Before the fix
// ?password= and ?token= values were shown as registered.
func TestHTTPOutputHasNoSecrets(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://elsewhere.example/login?session=s3cr3t-loc", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	p := newProber(t, Options{})
	u := strings.Replace(srv.URL, "http://", "http://user:s3cr3t-pw@", 1)
	for _, target := range []string{
		u + "/health?password=s3cr3t-q&token=s3cr3t-t",
		u + "/redirect?api_key=s3cr3t-k",
	} {
		for _, typ := range []string{TypeHTTP, TypeWeb} {
			r := p.Probe(context.Background(), Check{Type: typ, Target: target, Timeout: 5 * time.Second})
			if r.Status != Critical {
				t.Errorf("%s %s: %v %q, want critical", typ, target, r.Status, r.Output)
			}
			if strings.Contains(r.Output, "s3cr3t") {
				t.Errorf("%s output shows a secret: %q", typ, r.Output)
			}
		}
	}
}
