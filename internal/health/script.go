package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/dister/dister/internal/errs"
)

// waitDelay is how long Wait keeps reading output after the command exits
// or is killed; a grandchild that escaped the process group and holds the
// pipe must not hold the probe.
const waitDelay = 100 * time.Millisecond

// SplitCommand splits a command line into argv without a shell: no
// variables, globs, pipes or redirections; "$HOME" stays "$HOME". Words are
// separated by blanks; single quotes keep everything literally; double
// quotes keep blanks, and a backslash in them escapes only " and \;
// outside quotes a backslash escapes any next character.
func SplitCommand(line string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inWord  bool
		quote   rune // 0, '\'' or '"'
		escaped bool
	)
	for _, r := range line {
		switch {
		case escaped:
			if quote == '"' && r != '"' && r != '\\' {
				cur.WriteRune('\\')
			}
			cur.WriteRune(r)
			escaped = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case quote == '"':
			switch r {
			case '"':
				quote = 0
			case '\\':
				escaped = true
			default:
				cur.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("command line has an unclosed %c quote: %w", quote, errs.Invalid)
	}
	if escaped {
		return nil, fmt.Errorf("command line ends in a backslash: %w", errs.Invalid)
	}
	if inWord {
		args = append(args, cur.String())
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("command line is empty: %w", errs.Invalid)
	}
	return args, nil
}

// capped keeps the first MaxOutput bytes written and counts the rest, so a
// chatty script cannot grow the leader's memory.
type capped struct {
	buf   bytes.Buffer
	total int
}

func (c *capped) Write(p []byte) (int, error) {
	c.total += len(p)
	if room := MaxOutput - c.buf.Len(); room > 0 {
		if len(p) > room {
			c.buf.Write(p[:room])
		} else {
			c.buf.Write(p)
		}
	}
	return len(p), nil
}

func (c *capped) String() string {
	if c.total > c.buf.Len() {
		return c.buf.String() + fmt.Sprintf(" …(%d bytes cut)", c.total-c.buf.Len())
	}
	return c.buf.String()
}

// run starts argv in its own process group so that on timeout the whole
// group (the command and whatever it spawned) is killed, then waits.
func run(ctx context.Context, line string, stdout, stderr *capped) (timedOut bool, err error) {
	argv, err := SplitCommand(line)
	if err != nil {
		return false, err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	if err := cmd.Start(); err != nil {
		return false, err
	}
	err = cmd.Wait()
	// Children left running in the group after a normal exit are killed
	// too: a check must not leave processes behind on the leader. The group
	// id cannot have been reused while any member is alive.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	return ctx.Err() != nil, err
}

// probeScript: exit 0 passing, 1 warning, anything else (another code, a
// signal, failure to start, timeout) critical. Output is stdout and stderr
// interleaved as written.
func probeScript(ctx context.Context, line string, timeout time.Duration) Result {
	var out capped
	timedOut, err := run(ctx, line, &out, &out)
	text := strings.TrimSpace(out.String())
	if timedOut {
		return Result{Status: Critical, Output: joinOut(fmt.Sprintf("timed out after %v; killed", timeout), text)}
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return Result{Status: Passing, Output: text}
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return Result{Status: Warning, Output: joinOut("exit status 1", text)}
	}
	return Result{Status: Critical, Output: joinOut(err.Error(), text)}
}

// probeCustom is v1.5's custom type: alive only when the trimmed stdout is
// exactly "1"; the exit status is not consulted, as v1.5 did not.
func probeCustom(ctx context.Context, line string, timeout time.Duration) Result {
	var stdout, stderr capped
	timedOut, err := run(ctx, line, &stdout, &stderr)
	got := strings.TrimSpace(stdout.String())
	if timedOut {
		return Result{Status: Critical, Output: joinOut(fmt.Sprintf("timed out after %v; killed", timeout), got)}
	}
	if got == "1" && stdout.total == stdout.buf.Len() {
		return Result{Status: Passing, Output: "stdout: 1"}
	}
	why := fmt.Sprintf("stdout is %q, not 1", got)
	if err != nil {
		why += "; " + err.Error()
	}
	return Result{Status: Critical, Output: joinOut(why, strings.TrimSpace(stderr.String()))}
}

func joinOut(head, tail string) string {
	if tail == "" {
		return head
	}
	return head + ": " + tail
}
