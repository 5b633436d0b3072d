package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeStep is one line of README.md's curl block: a command and the
// answer its comment promises ("" for a line that prints nothing).
type readmeStep struct {
	line    int
	command string
	want    string
}

// readmeCurlBlock reads the first ```sh block after "## REST with curl".
// Lines starting with # are prose. A trailing comment after two spaces is
// the answer the command prints, unless it is in parentheses (a remark on
// a line that prints nothing, such as a variable assignment).
func readmeCurlBlock(t *testing.T, path string) []readmeStep {
	return shellBlock(t, path, "## REST with curl")
}

// shellBlock reads the first ```sh block after the line heading of path.
func shellBlock(t *testing.T, path, heading string) []readmeStep {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	i := 0
	for i < len(lines) && lines[i] != heading {
		i++
	}
	for i < len(lines) && lines[i] != "```sh" {
		i++
	}
	trailing := regexp.MustCompile(`\s{2,}# (.*)$`)
	var steps []readmeStep
	for i++; i < len(lines) && lines[i] != "```"; i++ {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		st := readmeStep{line: i + 1, command: l}
		if m := trailing.FindStringSubmatchIndex(l); m != nil {
			st.command = strings.TrimSpace(l[:m[0]])
			if c := l[m[2]:m[3]]; !strings.HasPrefix(c, "(") {
				st.want = c
			}
		}
		steps = append(steps, st)
	}
	if i >= len(lines) || len(steps) == 0 {
		t.Fatalf("%s: no ```sh block under %q", path, heading)
	}
	return steps
}

// readmePattern turns a promised answer into a regexp: <word> is a number,
// ... is anything, a space is any run of white space (an SSE stream has
// one field a line); the rest is literal and the whole answer must match.
func readmePattern(want string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`(?s)^`)
	tok := regexp.MustCompile(`<[a-z_]+>|\.\.\.|\s+`)
	last := 0
	for _, m := range tok.FindAllStringIndex(want, -1) {
		b.WriteString(regexp.QuoteMeta(want[last:m[0]]))
		switch t := want[m[0]:m[1]]; {
		case t == "...":
			b.WriteString(`.*`)
		case strings.TrimSpace(t) == "":
			b.WriteString(`\s+`)
		default:
			b.WriteString(`[0-9]+`)
		}
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(want[last:]))
	b.WriteString(`$`)
	return regexp.MustCompile(b.String())
}

func TestReadmePattern(t *testing.T) {
	for _, c := range []struct {
		want, got string
		match     bool
	}{
		{`{"revision":<rev>}`, `{"revision":12}`, true},
		{`{"revision":<rev>}`, `{"revision":x}`, false},
		{`{"revision":<rev>}`, `{"revision":1,"x":2}`, false},
		{`{"a":[{"key":"k",...}],"more":false}`, `{"a":[{"key":"k","v":1}],"more":false}`, true},
		{`event: put id: <rev> data: {...}...`, "event: put\nid: 3\ndata: {\"x\":1}\n\nevent: put", true},
		{`postgres://db:5432`, `postgres://db:5432`, true},
	} {
		if got := readmePattern(c.want).MatchString(c.got); got != c.match {
			t.Errorf("%q against %q: %v, want %v", c.want, c.got, got, c.match)
		}
	}
}

// TestReadmeCurlBlock pastes README.md's curl block into bash against a
// fresh daemon, as a new user would, and compares what each line prints
// with the comment beside it.
func TestReadmeCurlBlock(t *testing.T) {
	runDocBlock(t, readmeCurlBlock(t, filepath.Join("..", "..", "..", "README.md")))
}

// TestLegacyDocExample runs the example of docs/legacy.md the same way:
// the v1.5 /kv and /service formats and the CLI commands that use them.
func TestLegacyDocExample(t *testing.T) {
	runDocBlock(t, shellBlock(t, filepath.Join("..", "..", "..", "docs", "legacy.md"), "## Example"))
}

// runDocBlock runs steps in one bash against a fresh daemon, with the
// dister under test first on PATH and DISTER_ADDR naming the daemon.
func runDocBlock(t *testing.T, steps []readmeStep) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed (.ci/run installs it)")
	}
	d := newDaemon(t, "doc")
	d.start()
	d.waitReady()

	// One bash runs the block so that its variables carry from line to
	// line; a marker before each command tells their outputs apart.
	// The docs name the default address; this daemon has its own.
	_, port, _ := strings.Cut(d.httpAddr, ":")
	var script strings.Builder
	script.WriteString("set -u\n")
	for i, st := range steps {
		cmd := strings.NewReplacer("localhost:4168", d.httpAddr, "127.0.0.1:4168", d.httpAddr,
			`"port": "4168"`, `"port": "`+port+`"`).Replace(st.command)
		fmt.Fprintf(&script, "printf '\\n@@step %d@@\\n'\n%s\n", i, cmd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Env = append(cleanEnv(), "DISTER_ADDR="+d.httpAddr,
		"PATH="+filepath.Dir(distBin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Dir = t.TempDir()
	// stdout alone is compared: on stderr curl prints its progress meter
	// (which a terminal does not show) and the timeouts of --max-time.
	outPath, errPath := filepath.Join(cmd.Dir, "out"), filepath.Join(cmd.Dir, "err")
	outf, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	errf, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = outf, errf
	runErr := cmd.Run()
	outf.Close()
	errf.Close()
	data, _ := os.ReadFile(outPath)
	defer func() {
		if t.Failed() {
			e, _ := os.ReadFile(errPath)
			t.Logf("bash: %v; stderr:\n%s", runErr, e)
		}
	}()

	parts := regexp.MustCompile(`\n@@step (\d+)@@\n`).Split(string(data), -1)
	if len(parts) != len(steps)+1 {
		t.Fatalf("%d outputs for %d steps:\n%s", len(parts)-1, len(steps), data)
	}
	// The real JSON answers need the real addresses for the daemon's own
	// fields; the README shows the defaults.
	for i, st := range steps {
		got := strings.TrimSpace(parts[i+1])
		want := strings.NewReplacer("127.0.0.1:4168", d.httpAddr, `"port":"4168"`, `"port":"`+port+`"`).Replace(st.want)
		for _, f := range []string{"raft-addr", "peer-addr"} {
			def := map[string]string{"raft-addr": "127.0.0.1:4166", "peer-addr": "127.0.0.1:4167"}[f]
			want = strings.ReplaceAll(want, def, d.flag(f))
		}
		if !readmePattern(want).MatchString(got) {
			t.Errorf("line %d: %s\n  printed: %s\n  comment: %s", st.line, st.command, got, want)
		}
	}
}
