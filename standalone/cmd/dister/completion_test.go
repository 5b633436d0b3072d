package main

import (
	"strings"
	"testing"
)

// TestCompletionAndSuggestions: cobra's completion scripts for bash, zsh
// and fish, completion of subcommands through them, and "did you mean"
// for a mistyped command.
func TestCompletionAndSuggestions(t *testing.T) {
	for shell, mark := range map[string]string{"bash": "complete -o default", "zsh": "#compdef dister", "fish": "complete -c dister"} {
		out := cli(t, nil, "", nil, "completion", shell).ok(t, "completion "+shell)
		if !strings.Contains(out, mark) {
			t.Errorf("completion %s lacks %q:\n%.300s", shell, mark, out)
		}
	}
	// What the scripts call: the hidden __complete command.
	// (it reports its directive on stderr)
	out := cli(t, nil, "", nil, "__complete", "ba").stdout
	if !strings.Contains(out, "balance") {
		t.Errorf("completing \"ba\": %q, want balance", out)
	}
	out = cli(t, nil, "", nil, "__complete", "kv", "").stdout
	for _, sub := range []string{"get", "put", "del", "ls", "watch"} {
		if !strings.Contains(out, sub) {
			t.Errorf("completing \"kv \": %q lacks %s", out, sub)
		}
	}
	want(t, "mistyped command", cli(t, nil, "", nil, "stauts").fails(t, "stauts", 2),
		`dister: unknown command "stauts" for "dister"; did you mean "status"? (see dister --help)`)
	wantMatch(t, "mistyped subcommand", cli(t, nil, "", nil, "kv", "gett", "a").fails(t, "kv gett", 2),
		`did you mean "get"\?`)
}
