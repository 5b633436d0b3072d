package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// The web console (/ui) in a real headless Chromium against a real daemon
// process. Chromium is the Debian package "chromium", which .ci/run
// installs: outside CI a machine without it skips these tests, in CI
// (CI set) its absence fails them.

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed: .ci/run installs the Debian package chromium")
	}
	t.Skip("chromium is not installed (apt-get install chromium); the console tests need it")
	return ""
}

// browser is one headless Chromium tab, closed when the test ends.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string // screenshots go here (the test's artefact directory)
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox refuses to start
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	// A bound for the whole test, generous for a loaded 2-core machine.
	ctx, cancelTime := context.WithTimeout(ctx, 6*time.Minute)
	t.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
	})
	return &browser{t: t, ctx: ctx, dir: t.ArtifactDir()}
}

// do runs steps; what names them in a failure.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.shot("failed")
		b.t.Fatalf("%s: %v", what, err)
	}
}

// wait polls a JavaScript condition until it is true. Errors count as
// false until the deadline: an evaluation that meets a navigation fails
// with "cannot find context" and succeeds on the new page.
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`))
			b.shot("failed")
			b.t.Fatalf("waiting for %s (%s): last error %v\npage text:\n%s", what, expr, err, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// shot saves a screenshot of the whole page as NAME.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", p)
}

// page opens a console page by its hash route and waits for it to show.
func (b *browser) page(name, query string) {
	b.t.Helper()
	h := "#/" + name
	if query != "" {
		h += "?" + query
	}
	b.do("open "+name, chromedp.Evaluate[chromedp.Void](fmt.Sprintf("location.hash = %q", h)))
	b.wait("page "+name, fmt.Sprintf("!document.getElementById('page-%s').hidden", name))
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

func startConsoleDaemon(t *testing.T, token string) *daemon {
	t.Helper()
	d := newDaemon(t, "ui", "--token", token)
	d.token = token
	d.start()
	d.waitReady()
	return d
}

// TestConsole walks through every page of the console as a user would.
func TestConsole(t *testing.T) {
	t.Parallel() // with TestConsoleReadOnly: each has its own daemon and browser
	b := newBrowser(t)
	const token = "console-test-token"
	d := startConsoleDaemon(t, token)
	base := "http://" + d.httpAddr

	// The assets need no token; the data does.
	if code, _, _ := (&daemon{t: t, httpAddr: d.httpAddr}).do("GET", "/ui/", nil); code != http.StatusOK {
		t.Fatalf("GET /ui/ without a token: %d, want 200", code)
	}
	if code, _, _ := (&daemon{t: t, httpAddr: d.httpAddr}).do("GET", "/v1/status", nil); code != http.StatusUnauthorized {
		t.Fatalf("GET /v1/status without a token: %d, want 401", code)
	}

	// Log in: a wrong token is refused, the right one opens the cluster page.
	b.do("load", chromedp.Navigate(base+"/ui"), chromedp.WaitVisible(chromedp.CSS("#login-token")))
	b.shot("login")
	b.do("wrong token", chromedp.SendKeys(chromedp.CSS("#login-token"), "nope"), chromedp.Click(chromedp.CSS("#login-form button")))
	b.wait("refusal", `document.getElementById('login-err').textContent.length > 0`)
	b.do("log in", chromedp.SendKeys(chromedp.CSS("#login-token"), token), chromedp.Click(chromedp.CSS("#login-form button")))
	b.wait("cluster page", `!document.getElementById('page-cluster').hidden`)
	if got := evalJS[string](b, `sessionStorage.getItem('dister.token')`); got != token {
		t.Fatalf("session storage holds %q, want the token", got)
	}

	// Cluster: the one server alive, the default group with its leader, and
	// the writes/s sparkline drawn from two samples of /metrics.
	b.wait("server row", `document.querySelector('#cl-servers tbody tr') && document.querySelector('#cl-servers tbody').textContent.includes('alive')`)
	b.wait("default group row with leader 1", `(() => { const r = document.querySelector('#cl-groups tr[data-group="default"]'); return r && r.cells[1].textContent === '1'; })()`)
	for i := range 5 {
		putRetry(t, d, fmt.Sprintf("spark/%d", i), "x")
	}
	// Two samples of /metrics (3 s apart) with the puts between them give a
	// writes/s above zero: the line leaves the baseline.
	b.wait("writes sparkline", `(() => { const p = document.querySelector('#cl-groups tr[data-group="default"] svg.spark polyline');
		return p && p.points.length >= 2 && [...p.points].some(pt => pt.y < 22); })()`)
	b.shot("cluster")

	// Groups: create one from the keyboard, and delete another after confirming.
	b.page("groups", "")
	b.do("create group by keyboard", chromedp.Focus(chromedp.CSS("#gr-name")), chromedp.SendKeys(chromedp.CSS("#gr-name"), "billing"),
		chromedp.KeyEvent(kb.Enter))
	b.wait("billing listed", `document.querySelector('#gr-list tr[data-group="billing"]')`)
	b.do("create scratch", chromedp.SetValue(chromedp.CSS("#gr-name"), "scratch"), chromedp.Click(chromedp.CSS("#gr-create button")))
	b.wait("scratch listed", `document.querySelector('#gr-list tr[data-group="scratch"]')`)
	b.do("delete scratch", chromedp.Click(chromedp.CSS(`#gr-list tr[data-group="scratch"] button.danger`)))
	b.wait("confirmation", `document.querySelector('#gr-list tr[data-group="scratch"] .confirm')`)
	b.shot("groups")
	b.do("confirm", chromedp.Click(chromedp.CSS(`#gr-list tr[data-group="scratch"] .confirm button.danger`)))
	b.wait("scratch gone", `!document.querySelector('#gr-list tr[data-group="scratch"]') && document.querySelector('#gr-list tr[data-group="billing"]')`)
	var groups struct{ Groups []string }
	d.mustJSONCall("GET", "/v1/groups", nil, &groups)
	if strings.Join(groups.Groups, ",") != "billing,default" {
		t.Fatalf("groups after create/delete in the console: %v", groups.Groups)
	}

	// KV in group billing: create, edit with CAS, a conflict when another
	// writer changed the key underneath, the key's history, delete.
	b.page("kv", "group=billing")
	b.wait("billing listed", `document.getElementById('kv-group').value === 'billing' && document.querySelector('#kv-tree li')`)
	b.do("new key", chromedp.SetValue(chromedp.CSS("#kv-new-key"), "app/db"), chromedp.SetValue(chromedp.CSS("#kv-new-value"), "v1"),
		chromedp.Click(chromedp.CSS("#kv-new button")))
	b.wait("editor with v1", `!document.getElementById('kv-edit').hidden && document.getElementById('kv-value').value === 'v1'`)
	b.wait("tree shows app/", `[...document.querySelectorAll('#kv-tree a.dir')].some(a => a.textContent.startsWith('app/'))`)
	kvValue := func() (int, string) {
		code, body, err := d.do("GET", "/v1/kv/app/db?raw&group=billing", nil)
		if err != nil {
			t.Fatal(err)
		}
		return code, string(body)
	}
	if code, v := kvValue(); code != 200 || v != "v1" {
		t.Fatalf("after create: %d %q", code, v)
	}
	b.do("edit", chromedp.SetValue(chromedp.CSS("#kv-value"), "v2"), chromedp.Click(chromedp.CSS("#kv-save")))
	b.wait("saved", `document.getElementById('msg').textContent.startsWith('Saved app/db')`)
	if code, v := kvValue(); code != 200 || v != "v2" {
		t.Fatalf("after edit: %d %q", code, v)
	}
	// Another writer changes the key; the console's save must be refused.
	if code, body, err := d.do("PUT", "/v1/kv/app/db?group=billing", []byte("other")); err != nil || code != 200 {
		t.Fatalf("put underneath: %d %s %v", code, body, err)
	}
	b.do("edit stale", chromedp.SetValue(chromedp.CSS("#kv-value"), "v3"), chromedp.Click(chromedp.CSS("#kv-save")))
	b.wait("conflict shown", `!document.getElementById('kv-conflict').hidden && document.getElementById('kv-conflict').textContent.includes('other')`)
	if code, v := kvValue(); code != 200 || v != "other" {
		t.Fatalf("after the refused save the key is %d %q, want the other writer's value", code, v)
	}
	b.wait("history: three puts", `document.querySelectorAll('#kv-hist li').length === 3 && document.querySelector('#kv-hist li pre').textContent === 'other'`)
	b.shot("kv")
	b.do("reload", chromedp.Click(chromedp.CSS("#kv-reload")))
	b.wait("current value", `document.getElementById('kv-value').value === 'other'`)
	b.do("delete", chromedp.Click(chromedp.CSS("#kv-del")))
	b.do("confirm delete", chromedp.Click(chromedp.CSS("#kv-edit .confirm button.danger")))
	b.wait("deleted", `document.getElementById('msg').textContent.startsWith('Deleted app/db')`)
	if code, _ := kvValue(); code != http.StatusNotFound {
		t.Fatalf("after delete: %d, want 404", code)
	}

	// Services: register an instance with an http check; it turns passing,
	// and critical once its endpoint stops.
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer health.Close()
	b.page("services", "")
	b.do("register", chromedp.SetValue(chromedp.CSS("#sv-r-service"), "api"), chromedp.SetValue(chromedp.CSS("#sv-r-id"), "a1"),
		chromedp.SetValue(chromedp.CSS("#sv-r-addr"), health.Listener.Addr().String()),
		chromedp.SetValue(chromedp.CSS("#sv-r-type"), "http"), chromedp.SetValue(chromedp.CSS("#sv-r-target"), health.URL+"/health"),
		chromedp.SetValue(chromedp.CSS("#sv-r-int"), "300ms"), chromedp.Click(chromedp.CSS("#sv-reg button[type=submit]")))
	b.wait("instance passing", `document.querySelector('#sv-inst tr[data-id="a1"][data-status="passing"]')`)
	b.wait("service listed", `document.querySelector('#sv-list tr[data-service="api"]')`)
	b.shot("services")
	health.Close()
	b.wait("instance critical", `document.querySelector('#sv-inst tr[data-id="a1"][data-status="critical"] .badge.s-critical')`)
	b.shot("services-critical")
	b.do("deregister", chromedp.Click(chromedp.CSS(`#sv-inst tr[data-id="a1"] button.danger`)))
	b.do("confirm deregister", chromedp.Click(chromedp.CSS(`#sv-inst tr[data-id="a1"] .confirm button.danger`)))
	b.wait("no instances", `document.querySelector('#sv-inst tbody').textContent === 'No instances.'`)
	var svc struct{ Instances []any }
	d.mustJSONCall("GET", "/v1/services/api", nil, &svc)
	if len(svc.Instances) != 0 {
		t.Fatalf("after deregistering in the console: %d instances", len(svc.Instances))
	}

	// Watch: a put made elsewhere appears live.
	b.page("watch", "")
	b.wait("groups to watch", `document.getElementById('wa-group').value === 'default'`)
	b.do("start watch", chromedp.SetValue(chromedp.CSS("#wa-prefix"), "w/"), chromedp.Click(chromedp.CSS("#wa-start")))
	b.wait("watching", `document.getElementById('wa-state').textContent.startsWith('Watching')`)
	putRetry(t, d, "w/x", "hello")
	b.wait("event", `(() => { const li = document.querySelector('#wa-events li[data-key="w/x"]'); return li && li.textContent.includes('hello'); })()`)
	b.shot("watch")

	// Settings: the role, and a setting saved.
	b.page("settings", "")
	b.wait("role", `document.getElementById('st-role').textContent.includes('admin')`)
	b.do("script checks on", chromedp.Click(chromedp.CSS("#st-script")), chromedp.Click(chromedp.CSS("#st-form button")))
	b.wait("saved", `document.getElementById('msg').textContent === 'Settings saved.'`)
	var settings struct {
		ScriptChecks bool `json:"script_checks"`
	}
	d.mustJSONCall("GET", "/v1/settings", nil, &settings)
	if !settings.ScriptChecks {
		t.Fatal("settings: script_checks not saved")
	}
	b.shot("settings")

	// Keyboard: the first Tab reaches the skip link, and a page is opened
	// by Enter on its link.
	b.do("reload", chromedp.Reload())
	b.wait("cluster after reload", `!document.getElementById('page-settings').hidden`)
	b.do("tab", chromedp.KeyEvent(kb.Tab))
	if got := evalJS[string](b, `document.activeElement.className`); got != "skip" {
		t.Fatalf("first Tab focuses %q, want the skip link", got)
	}
	b.do("nav by keyboard", chromedp.Focus(chromedp.CSS(`#nav a[href="#/kv"]`)), chromedp.KeyEvent(kb.Enter))
	b.wait("kv page by keyboard", `!document.getElementById('page-kv').hidden && document.activeElement.tagName === 'H1'`)

	// Each page: the bytes a fresh load transfers, and no sideways
	// scrolling at 320 px.
	b.do("no cache", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: true})
		return err
	}))
	for _, p := range []string{"cluster", "groups", "kv", "services", "watch", "settings"} {
		b.do("load "+p, chromedp.Navigate("about:blank"), chromedp.Navigate(base+"/ui/#/"+p))
		b.wait(p+" shown", fmt.Sprintf(`!document.getElementById('page-%s').hidden && document.readyState === 'complete'`, p))
		time.Sleep(time.Second) // let the page's first data calls finish
		n := evalJS[int](b, `(() => { let n = performance.getEntriesByType('navigation')[0].transferSize;
			for (const r of performance.getEntriesByType('resource')) n += r.transferSize; return n; })()`)
		t.Logf("page %s: %d bytes transferred", p, n)
		if n <= 0 || n >= 100_000 {
			t.Errorf("page %s transferred %d bytes, want (0, 100 KB)", p, n)
		}
	}
	b.do("320 px", chromedp.EmulateViewport(320, 720))
	for _, p := range []string{"cluster", "groups", "kv", "services", "watch", "settings"} {
		b.page(p, "")
		time.Sleep(300 * time.Millisecond) // tables filled
		if w := evalJS[int](b, `document.documentElement.scrollWidth`); w > 320 {
			b.shot("narrow-" + p)
			t.Errorf("page %s at 320 px is %d px wide", p, w)
		}
		b.shot("narrow-" + p)
	}
}

// TestConsoleReadOnly: a read token gets a read-only console (the console
// probes the role at login), and a token whose role drops to read while
// the console is open (the token file reloaded) turns it read-only at the
// first refused save, which changes nothing.
func TestConsoleReadOnly(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	const admin, reader, editor = "console-admin-token", "console-read-token", "console-edit-token"
	file := filepath.Join(t.TempDir(), "tokens")
	writeTokens := func(editorRole string) {
		t.Helper()
		if err := os.WriteFile(file, []byte("read "+reader+"\n"+editorRole+" "+editor+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeTokens("write")
	d := newDaemon(t, "ui", "--token", admin, "--token-file", file)
	d.token = admin
	d.start()
	d.waitReady()
	base := "http://" + d.httpAddr
	putRetry(t, d, "app/x", "1")

	login := func(token string) {
		// about:blank first: a navigation that changes only the hash
		// would not load the page again.
		b.do("load", chromedp.Navigate("about:blank"), chromedp.Navigate(base+"/ui/#/kv?key=app%2Fx"),
			chromedp.WaitVisible(chromedp.CSS("#login-token")),
			chromedp.SendKeys(chromedp.CSS("#login-token"), token), chromedp.Click(chromedp.CSS("#login-form button")))
		b.wait("kv page", `!document.getElementById('page-kv').hidden && document.getElementById('kv-value').value === '1'`)
	}
	login(reader)
	b.wait("read-only banner", `!document.getElementById('banner').hidden && document.getElementById('banner').textContent.startsWith('Read-only')`)
	b.wait("save disabled", `document.getElementById('kv-save').disabled && document.getElementById('kv-del').disabled`)
	b.shot("read-only")

	// Writes allowed at login, refused afterwards.
	b.do("log out", chromedp.Evaluate[chromedp.Void](`sessionStorage.clear()`))
	login(editor)
	b.wait("writable", `!document.getElementById('kv-save').disabled && document.getElementById('banner').textContent.startsWith('This token may change keys')`)
	writeTokens("read")
	ed := &daemon{t: t, httpAddr: d.httpAddr, token: editor}
	deadline := time.Now().Add(20 * time.Second)
	for {
		// The daemon rereads the file at most once a second.
		if code, _, _ := ed.do("PUT", "/v1/kv/probe", []byte("x")); code == http.StatusForbidden {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the editor's token still writes after its role dropped to read")
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.do("save refused", chromedp.SetValue(chromedp.CSS("#kv-value"), "2"), chromedp.Click(chromedp.CSS("#kv-save")))
	b.wait("turned read-only", `document.getElementById('kv-save').disabled && !document.getElementById('banner').hidden`)
	code, body, _ := d.do("GET", "/v1/kv/app/x?raw", nil)
	if code != 200 || string(body) != "1" {
		t.Fatalf("key after a refused save: %d %q", code, body)
	}
}

// A binary value is shown as base64 and not editable; Save on it wrote
// the base64 text as the new value (CAS on an unchanged revision lets it
// through), silently replacing the bytes with their printable form.
func TestConsoleBinarySaveKeepsBytes(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	const token = "console-test-token"
	d := startConsoleDaemon(t, token)
	bin := string([]byte{0xff, 0xfe, 0x00, 0x01})
	putRetry(t, d, "bin", bin)
	b.do("load", chromedp.Navigate("http://"+d.httpAddr+"/ui/#/kv?key=bin"),
		chromedp.WaitVisible(chromedp.CSS("#login-token")),
		chromedp.SendKeys(chromedp.CSS("#login-token"), token), chromedp.Click(chromedp.CSS("#login-form button")))
	b.wait("binary shown", `!document.getElementById('page-kv').hidden && document.getElementById('kv-value').value === '//4AAQ=='`)
	b.do("save", chromedp.Click(chromedp.CSS("#kv-save")))
	b.wait("save answered", `document.getElementById('msg').textContent !== ''`)
	code, body, _ := d.do("GET", "/v1/kv/bin?raw", nil)
	if code != 200 || string(body) != bin {
		t.Fatalf("binary key after Save: %d %q, want %q", code, body, bin)
	}
}

// The key's history put every retained value in full into the page (up
// to 200 entries of up to 1 MiB each: hundreds of MB of text, a frozen
// tab); the watch page shortens them, the history and the CAS conflict
// message did not.
func TestConsoleHistoryShortensHugeValues(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	const token = "console-test-token"
	d := startConsoleDaemon(t, token)
	big := strings.Repeat("x", 512<<10)
	putRetry(t, d, "big", big)
	b.do("load", chromedp.Navigate("http://"+d.httpAddr+"/ui/#/kv?key=big"),
		chromedp.WaitVisible(chromedp.CSS("#login-token")),
		chromedp.SendKeys(chromedp.CSS("#login-token"), token), chromedp.Click(chromedp.CSS("#login-form button")))
	b.wait("history entry", `document.querySelector('#kv-hist li pre') !== null`)
	if n := evalJS[int](b, `document.querySelector('#kv-hist li pre').textContent.length`); n > 10000 {
		t.Fatalf("history shows a %d-character value in full", n)
	}
	// The editor still holds the whole value.
	if n := evalJS[int](b, `document.getElementById('kv-value').value.length`); n != len(big) {
		t.Fatalf("editor holds %d characters, want %d", n, len(big))
	}
}
