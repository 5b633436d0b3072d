package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dister/dister/internal/testcluster"
)

// distBin is the dister binary the tests run as real processes, built once
// per test run.
var distBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dister-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		distBin = filepath.Join(dir, "dister")
		gobin, err := exec.LookPath("go")
		if err != nil {
			fmt.Fprintln(os.Stderr, "the go command is needed to build the binary under test:", err)
			return 1
		}
		build := exec.Command(gobin, "build", "-o", distBin, ".")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "go build:", err)
			return 1
		}
		code := m.Run()
		if code == 0 {
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, "goleak:", err)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// freeAddr picks a loopback port that no other test process holds.
func freeAddr(t testing.TB) string {
	t.Helper()
	return testcluster.FreeAddr(t)
}

// daemon is one "dister server" process.
type daemon struct {
	t                      testing.TB
	name                   string
	args                   []string // after "server"
	env                    []string // added to the test's environment
	dir                    string   // working directory
	httpAddr               string   // where its REST API is reached
	token                  string
	tlsClient              *http.Client // set for a daemon serving HTTPS
	stdoutPath, stderrPath string

	cmd  *exec.Cmd
	done chan struct{}
}

// newDaemon prepares a server with its own data dir and free ports; extra
// flags are added after the generated ones.
func newDaemon(t testing.TB, name string, extra ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{t: t, name: name, dir: dir, httpAddr: freeAddr(t),
		stdoutPath: filepath.Join(dir, "stdout.log"), stderrPath: filepath.Join(dir, "stderr.log")}
	d.args = append([]string{
		"--data-dir", filepath.Join(dir, "data"),
		"--raft-addr", freeAddr(t),
		"--peer-addr", freeAddr(t),
		"--http-addr", d.httpAddr,
		"--log-level", "warn",
	}, extra...)
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			d.dumpLogs()
		}
	})
	return d
}

// flag returns the value of a generated flag.
func (d *daemon) flag(name string) string {
	for i, a := range d.args {
		if a == "--"+name && i+1 < len(d.args) {
			return d.args[i+1]
		}
	}
	return ""
}

// start runs the process with "server" and d.args; logs append, so a
// restart's output follows the first run's.
func (d *daemon) start() {
	d.startArgs(append([]string{"server"}, d.args...)...)
}

func (d *daemon) startArgs(args ...string) {
	d.t.Helper()
	out, err := os.OpenFile(d.stdoutPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	errf, err := os.OpenFile(d.stderrPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	fmt.Fprintf(errf, "=== %s: dister %s\n", d.name, strings.Join(args, " "))
	cmd := exec.Command(distBin, args...)
	cmd.Dir = d.dir
	cmd.Env = append(cleanEnv(), d.env...)
	// Files, not pipes: exec then starts no copying goroutines.
	cmd.Stdout, cmd.Stderr = out, errf
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	out.Close()
	errf.Close()
	d.cmd, d.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
}

// cleanEnv is the test's environment without DISTER_* variables, so that a
// developer's settings do not leak into the processes.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DISTER_") {
			out = append(out, kv)
		}
	}
	return out
}

func (d *daemon) running() bool {
	if d.done == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// waitExit waits for the process to end and returns its exit code.
func (d *daemon) waitExit(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.done:
		return d.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		d.t.Fatalf("%s did not exit within %v", d.name, timeout)
		return -1
	}
}

func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if d.running() {
		if err := d.cmd.Process.Signal(sig); err != nil {
			d.t.Fatalf("signal %s: %v", d.name, err)
		}
	}
}

// kill ends the process at once (SIGKILL) and waits for it.
func (d *daemon) kill() {
	if d.running() {
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// stop sends SIGTERM and wants exit code 0.
func (d *daemon) stop() {
	d.t.Helper()
	d.signal(syscall.SIGTERM)
	if code := d.waitExit(30 * time.Second); code != 0 {
		d.t.Fatalf("%s exited with %d after SIGTERM, want 0", d.name, code)
	}
}

// waitReady polls /readyz until every group has a leader.
func (d *daemon) waitReady() {
	d.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if !d.running() {
			d.t.Fatalf("%s exited (code %d) before it was ready", d.name, d.cmd.ProcessState.ExitCode())
		}
		code, body, err := d.do("GET", "/readyz", nil)
		if err == nil && code == http.StatusOK {
			return
		}
		last = fmt.Sprintf("%d %s %v", code, body, err)
		time.Sleep(100 * time.Millisecond)
	}
	d.t.Fatalf("%s not ready: last answer %s", d.name, last)
}

// logs returns what the process wrote so far.
func (d *daemon) logs() (stdout, stderr string) {
	o, _ := os.ReadFile(d.stdoutPath)
	e, _ := os.ReadFile(d.stderrPath)
	return string(o), string(e)
}

// dumpLogs shows the end of the daemon's output in the test log.
func (d *daemon) dumpLogs() {
	o, e := d.logs()
	lines := strings.Split(e, "\n")
	if len(lines) > 150 {
		lines = append([]string{"..."}, lines[len(lines)-150:]...)
	}
	d.t.Logf("--- %s stdout:\n%s--- %s stderr (end):\n%s", d.name, o, d.name, strings.Join(lines, "\n"))
}

// httpc has no keep-alive, so no idle connection goroutine outlives a test.
var httpc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// do sends one request to the daemon with its token.
func (d *daemon) do(method, path string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	scheme, hc := "http", httpc
	if d.tlsClient != nil {
		scheme, hc = "https", d.tlsClient
	}
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+d.httpAddr+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// mustJSONCall sends a request that must answer 200 and decodes it.
func (d *daemon) mustJSONCall(method, path string, body []byte, out any) {
	d.t.Helper()
	code, data, err := d.do(method, path, body)
	if err != nil || code != http.StatusOK {
		d.t.Fatalf("%s %s on %s: %d %s %v", method, path, d.name, code, data, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			d.t.Fatalf("%s %s on %s: %v in %s", method, path, d.name, err, data)
		}
	}
}

// status is GET /v1/status.
func (d *daemon) status() statusAnswer {
	d.t.Helper()
	var st statusAnswer
	d.mustJSONCall("GET", "/v1/status", nil, &st)
	return st
}

// cliResult is one run of the CLI.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cli runs the binary as a client command with DISTER_ADDR pointing at d
// (when d is not nil) and env added.
func cli(t testing.TB, d *daemon, stdin string, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, distBin, args...)
	cmd.Env = cleanEnv()
	if d != nil {
		cmd.Env = append(cmd.Env, "DISTER_ADDR="+d.httpAddr)
	}
	cmd.Env = append(cmd.Env, env...)
	// Buffers would make exec start copying goroutines that end with
	// Wait; files are simpler still.
	dir := t.TempDir()
	outf, _ := os.Create(filepath.Join(dir, "out"))
	errf, _ := os.Create(filepath.Join(dir, "err"))
	defer outf.Close()
	defer errf.Close()
	cmd.Stdout, cmd.Stderr = outf, errf
	if stdin != "" {
		inPath := filepath.Join(dir, "in")
		if err := os.WriteFile(inPath, []byte(stdin), 0o644); err != nil {
			t.Fatal(err)
		}
		inf, err := os.Open(inPath)
		if err != nil {
			t.Fatal(err)
		}
		defer inf.Close()
		cmd.Stdin = inf
	}
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("dister %s: %v", strings.Join(args, " "), err)
	}
	o, _ := os.ReadFile(filepath.Join(dir, "out"))
	e, _ := os.ReadFile(filepath.Join(dir, "err"))
	return cliResult{stdout: string(o), stderr: string(e), code: cmd.ProcessState.ExitCode()}
}

// ok wants exit code 0 and nothing on stderr, and returns stdout.
func (r cliResult) ok(t testing.TB, what string) string {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("%s: exit %d, stderr %q, stdout %q", what, r.code, r.stderr, r.stdout)
	}
	return r.stdout
}

// fails wants the exit code, empty stdout and exactly one line on stderr,
// and returns that line.
func (r cliResult) fails(t testing.TB, what string, code int) string {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: exit %d, want %d (stdout %q, stderr %q)", what, r.code, code, r.stdout, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("%s: stdout %q, want nothing", what, r.stdout)
	}
	if !strings.HasSuffix(r.stderr, "\n") || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "dister: ") {
		t.Errorf("%s: stderr %q, want one line starting with \"dister: \"", what, r.stderr)
	}
	return strings.TrimSuffix(r.stderr, "\n")
}
