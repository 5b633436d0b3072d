// Command dister is the dister daemon and its command-line client.
//
// "dister server" (or "dister" alone) runs a server with the REST API of the
// standalone package; every other command talks to a running daemon over
// that API, so it works the same against a local or a remote one.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dister/dister"
)

// Exit codes: 1 for a failed operation, 2 for a command line that makes no
// sense (unknown command or flag, wrong arguments, bad configuration).
const (
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// env is how the process environment is read (os.Getenv in main).
type env func(string) string

// usageError marks a mistake in the command line; it exits with 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// commandName is the command as messages name it, after the "dister: "
// every message starts with ("lease revoke", not "dister lease revoke").
func commandName(cmd *cobra.Command) string {
	if !cmd.HasParent() {
		return cmd.Name()
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// failure marks an error of the operation itself (exit 1), as opposed to
// errors cobra raises while parsing the command line (exit 2).
type failure struct{ err error }

func (e *failure) Error() string { return e.err.Error() }
func (e *failure) Unwrap() error { return e.err }

// runE adapts a command body so that its errors exit with 1 unless they
// are usage errors.
func runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		var u *usageError
		if err == nil || errors.As(err, &u) {
			return err
		}
		return &failure{err}
	}
}

// run executes one command line and returns the exit code. Every error is
// printed as one line on stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv env) int {
	root := newRootCmd(stdin, stdout, stderr, getenv)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "dister: %s\n", oneLine(err.Error()))
	// Errors from a command's body are failures unless it said usage;
	// errors cobra raised before running one are the command line's.
	var f *failure
	if errors.As(err, &f) {
		return exitFailure
	}
	return exitUsage
}

// oneLine keeps an error on one line, whatever a server or library put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer, getenv env) *cobra.Command {
	root := &cobra.Command{
		Use:   "dister",
		Short: "dister: a Raft-replicated configuration KV centre and service registry, daemon and client",
		Long: `dister is a Raft-replicated configuration KV centre and service registry
(health checks, load balancing) with isolated groups.

"dister" alone starts a single-node server with every default (REST API on
127.0.0.1:4168, data in ./dister-data); "dister server --help" lists its
flags. The other commands talk to a running daemon over its REST API
(--addr, default 127.0.0.1:4168, or DISTER_ADDR).`,
		Version:       dister.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noArgs,
	}
	// cobra adds its own "completion bash|zsh|fish|powershell" command
	// (root.CompletionOptions left as they are); the scripts call its
	// hidden __complete command, which completes subcommands and flags.
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	srv := newServerCmd(stdout, stderr, getenv)
	root.RunE = srv.RunE
	root.AddCommand(srv)
	root.AddCommand(newCertsCmd(stdout))

	c := &client{stdin: stdin, stdout: stdout, stderr: stderr}
	for _, cmd := range []*cobra.Command{
		newKVCmd(c), newLeaseCmd(c), newGroupCmd(c), newMemberCmd(c), newStatusCmd(c),
		newNodesCmd(c), newAddNodeCmd(c), newDelNodeCmd(c),
		newKVsCmd(c), newGetKVCmd(c), newAddKVCmd(c), newDelKVCmd(c),
		newServiceCmd(c), newBalanceCmd(c), newSettingsCmd(c),
		newServicesCmd(c), newGetServiceCmd(c), newAddServiceCmd(c), newDelServiceCmd(c),
		newSnapshotCmd(c), newBenchCmd(c),
	} {
		c.bindFlags(cmd, getenv)
		root.AddCommand(cmd)
	}
	return root
}

// noArgs refuses arguments, naming the first one as an unknown command.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		hint := ""
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2 // cobra's own default, set only on its path
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			hint = fmt.Sprintf("; did you mean %q?", s[0])
		}
		return usagef("unknown command %q for %q%s (see %s --help)", args[0], cmd.CommandPath(), hint, cmd.CommandPath())
	}
	return nil
}

// exactArgs wants n arguments, named in the command's Use line.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s wants %d argument(s), got %d (usage: %s)", commandName(cmd), n, len(args), cmd.UseLine())
		}
		return nil
	}
}

// rangeArgs wants between lo and hi arguments.
func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return usagef("%s wants %d to %d arguments, got %d (usage: %s)", commandName(cmd), lo, hi, len(args), cmd.UseLine())
		}
		return nil
	}
}

// parentCmd is a command that only groups subcommands: run alone or with an
// unknown subcommand it is a usage error rather than cobra's silent help.
func parentCmd(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var names []string
			for _, s := range cmd.Commands() {
				names = append(names, s.Name())
			}
			return usagef("%s needs a subcommand: %s (see %s --help)", cmd.CommandPath(), strings.Join(names, ", "), cmd.CommandPath())
		},
	}
}
