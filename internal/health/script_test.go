package health

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func scriptProber(t *testing.T) *Prober { return newProber(t, Options{AllowScript: true}) }

func TestScriptExitCodes(t *testing.T) {
	p := scriptProber(t)
	for code, want := range map[int]Status{0: Passing, 1: Warning, 2: Critical, 127: Critical} {
		r := p.Probe(context.Background(), Check{Type: TypeScript, Target: "sh -c 'echo out; echo err >&2; exit " + strconv.Itoa(code) + "'"})
		if r.Status != want {
			t.Errorf("exit %d: %v %q, want %v", code, r.Status, r.Output, want)
		}
		if !strings.Contains(r.Output, "out") || !strings.Contains(r.Output, "err") {
			t.Errorf("exit %d: output %q lacks stdout and stderr", code, r.Output)
		}
	}
	r := p.Probe(context.Background(), Check{Type: TypeScript, Target: "/no/such/command"})
	if r.Status != Critical || !strings.Contains(r.Output, "no such file") {
		t.Errorf("missing command: %v %q", r.Status, r.Output)
	}
}

func TestScriptNoShell(t *testing.T) {
	p := scriptProber(t)
	r := p.Probe(context.Background(), Check{Type: TypeScript, Target: "echo $HOME `id` ; |"})
	if r.Status != Passing || r.Output != "$HOME `id` ; |" {
		t.Fatalf("%v %q, want the words echoed literally", r.Status, r.Output)
	}
}

func TestScriptOutputCut(t *testing.T) {
	p := scriptProber(t)
	r := p.Probe(context.Background(), Check{Type: TypeScript, Target: "head -c 100000 /dev/zero"})
	if r.Status != Passing || len(r.Output) > MaxOutput {
		t.Fatalf("%v, output %d bytes, want passing and ≤ %d", r.Status, len(r.Output), MaxOutput)
	}
}

func TestScriptTimeoutKillsGroup(t *testing.T) {
	p := scriptProber(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The shell starts a grandchild sleep in the background, records its pid
	// and then waits on another sleep: both must die with the timeout.
	start := time.Now()
	r := p.Probe(context.Background(), Check{
		Type:    TypeScript,
		Target:  "sh -c 'sleep 10 & echo $! > " + pidFile + "; sleep 10'",
		Timeout: 300 * time.Millisecond,
	})
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("probe took %v with a 300ms timeout", el)
	}
	if r.Status != Critical || !strings.Contains(r.Output, "timed out after 300ms; killed") {
		t.Fatalf("%v %q", r.Status, r.Output)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("background sleep %d still alive after the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs and is not a zombie (an orphan reaped by
// init may linger as one for a moment).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func TestCustom(t *testing.T) {
	p := scriptProber(t)
	cases := map[string]Status{
		"echo 1":                 Passing,
		"printf ' 1\n\n'":        Passing,
		"echo 0":                 Critical,
		"echo 11":                Critical,
		"true":                   Critical,
		"sh -c 'echo 1; exit 3'": Passing, // v1.5 judged stdout only
	}
	for line, want := range cases {
		r := p.Probe(context.Background(), Check{Type: TypeCustom, Target: line})
		if r.Status != want {
			t.Errorf("custom %q: %v %q, want %v", line, r.Status, r.Output, want)
		}
	}
}

func TestScriptDisabledInProber(t *testing.T) {
	p := newProber(t, Options{})
	for _, typ := range []string{TypeScript, TypeCustom} {
		r := p.Probe(context.Background(), Check{Type: typ, Target: "echo 1"})
		if !r.NotRun || r.Status != 0 || !strings.Contains(r.Output, "not run") {
			t.Errorf("%s with scripts off: %v %q", typ, r.Status, r.Output)
		}
	}
	p.SetAllowScript(true)
	if r := p.Probe(context.Background(), Check{Type: TypeCustom, Target: "echo 1"}); r.Status != Passing {
		t.Errorf("after SetAllowScript(true): %v %q", r.Status, r.Output)
	}
}
