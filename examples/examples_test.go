// Package examples_test smoke-runs the examples: each Go example must exit
// 0 on its own, and rest/rest.sh must pass against a dister daemon.
package examples_test

import (
	"context"
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

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// build compiles the examples and the daemon once, into one directory.
func build(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is needed to build the examples: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(gobin, "build", "-o", dir+string(filepath.Separator),
		"./embedded", "./cluster", "./groups", "./client", "../standalone/cmd/dister")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// runLogged runs cmd with its output in a file (no copying goroutines) and
// returns the output; it fails the test on a non-zero exit.
func runLogged(t *testing.T, name string, cmd *exec.Cmd) string {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	out, _ := os.ReadFile(logPath)
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	return string(out)
}

func TestExamples(t *testing.T) {
	bin := build(t)
	for _, name := range []string{"embedded", "cluster", "groups", "client"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out := runLogged(t, name, exec.CommandContext(ctx, filepath.Join(bin, name)))
			t.Logf("%s:\n%s", name, out)
		})
	}

	t.Run("rest", func(t *testing.T) {
		for _, tool := range []string{"bash", "curl"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("rest.sh needs %s: %v", tool, err)
			}
		}
		dir := t.TempDir()
		httpAddr := freeAddr(t)
		logPath := filepath.Join(dir, "daemon.log")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		daemon := exec.Command(filepath.Join(bin, "dister"), "server",
			"--data-dir", filepath.Join(dir, "data"), "--http-addr", httpAddr,
			"--raft-addr", freeAddr(t), "--peer-addr", freeAddr(t), "--log-level", "error")
		daemon.Stdout, daemon.Stderr = logf, logf
		if err := daemon.Start(); err != nil {
			t.Fatal(err)
		}
		exited := false
		defer func() {
			if !exited {
				_ = daemon.Process.Kill()
				_ = daemon.Wait()
			}
			if t.Failed() {
				out, _ := os.ReadFile(logPath)
				t.Logf("daemon log:\n%s", out)
			}
		}()
		waitReady(t, httpAddr)

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		script := exec.CommandContext(ctx, "bash", filepath.Join("rest", "rest.sh"))
		script.Env = append(os.Environ(), "DISTER_ADDR="+httpAddr)
		out := runLogged(t, "rest.sh", script)
		if !strings.Contains(out, "all steps passed") {
			t.Fatalf("rest.sh:\n%s", out)
		}
		t.Logf("rest.sh:\n%s", out)

		if err := daemon.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		err = daemon.Wait()
		exited = true
		if err != nil {
			t.Fatalf("daemon after SIGTERM: %v", err)
		}
	})
}

// freeAddr picks a loopback port that no other test process holds.
func freeAddr(t *testing.T) string {
	t.Helper()
	return testcluster.FreeAddr(t)
}

func waitReady(t *testing.T, addr string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("daemon at %s not ready", addr)
}
