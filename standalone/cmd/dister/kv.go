package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

// entry is the /v1 Entry JSON.
type entry struct {
	Key            string  `json:"key"`
	Value          *string `json:"value,omitempty"`
	ValueBase64    string  `json:"value_base64,omitempty"`
	CreateRevision int64   `json:"create_revision"`
	ModRevision    int64   `json:"mod_revision"`
	Version        int64   `json:"version"`
	Lease          int64   `json:"lease"`
}

// bytes is the value whichever way it was sent.
func (e *entry) bytes() ([]byte, error) {
	if e.Value != nil {
		return []byte(*e.Value), nil
	}
	if e.ValueBase64 == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(e.ValueBase64)
	if err != nil {
		return nil, fmt.Errorf("key %q: value_base64: %w", e.Key, err)
	}
	return b, nil
}

type listAnswer struct {
	Revision int64   `json:"revision"`
	Entries  []entry `json:"entries"`
	More     bool    `json:"more"`
}

// keyPath is the URL path of a key; PathEscape also escapes "/", which the
// server decodes, so any key (also "a//b" or "/a") arrives as it is.
func keyPath(key string) string { return "/v1/kv/" + url.PathEscape(key) }

func newKVCmd(c *client) *cobra.Command {
	kv := parentCmd("kv", "Read and write keys (REST /v1/kv)")
	kv.AddCommand(newKVGetCmd(c), newKVPutCmd(c), newKVDelCmd(c), newKVLsCmd(c), newKVWatchCmd(c))
	return kv
}

func newKVGetCmd(c *client) *cobra.Command {
	var consistency string
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print a key's value (-o json: the whole entry)",
		Args:  exactArgs(1),
	}
	cmd.Flags().StringVar(&consistency, "consistency", "", "linearizable, session (the default) or stale")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		key := args[0]
		q := c.groupQuery()
		if consistency != "" {
			q.Set("consistency", consistency)
		}
		var e entry
		data, err := c.call(cmd.Context(), "GET", keyPath(key), q, nil, &e)
		if err != nil {
			return fmt.Errorf("kv get %q: %w", key, err)
		}
		if c.json() {
			return c.printJSON(data)
		}
		v, err := e.bytes()
		if err != nil {
			return err
		}
		// The value's bytes exactly, for pipes and files; a newline only
		// for a person at a terminal.
		if isTerminal(c.stdout) {
			v = append(v, '\n')
		}
		_, err = c.stdout.Write(v)
		return err
	})
	return cmd
}

func newKVPutCmd(c *client) *cobra.Command {
	var (
		cas   int64
		lease int64
		ttl   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Write a key; VALUE - reads the value from stdin",
		Args:  exactArgs(2),
	}
	cmd.Flags().Int64Var(&cas, "cas", -1, "write only if the key's mod revision is this (0 = only if it does not exist)")
	cmd.Flags().Int64Var(&lease, "lease", 0, "tie the key to this lease: it is deleted when the lease ends")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "tie the key to a new lease of this TTL (e.g. 10s), which nothing renews but \"dister lease keepalive\"")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		key, value := args[0], []byte(args[1])
		q := c.groupQuery()
		if cmd.Flags().Changed("cas") {
			if cas < 0 {
				return usagef("--cas %d: want a revision >= 0", cas)
			}
			q.Set("cas", strconv.FormatInt(cas, 10))
		}
		switch {
		case cmd.Flags().Changed("lease") && cmd.Flags().Changed("ttl"):
			return usagef("--lease and --ttl exclude each other")
		case cmd.Flags().Changed("lease"):
			if lease <= 0 {
				return usagef("--lease %d: want a lease id > 0", lease)
			}
			q.Set("lease", strconv.FormatInt(lease, 10))
		case cmd.Flags().Changed("ttl"):
			if ttl <= 0 {
				return usagef("--ttl %v: want a positive duration", ttl)
			}
			q.Set("ttl", ttl.String())
		}
		if args[1] == "-" {
			var err error
			if value, err = io.ReadAll(c.stdin); err != nil {
				return fmt.Errorf("kv put %q: reading stdin: %w", key, err)
			}
		}
		var ans struct {
			Revision int64 `json:"revision"`
			Lease    int64 `json:"lease"`
		}
		data, err := c.call(cmd.Context(), "PUT", keyPath(key), q, bytesReader(value), &ans)
		if err != nil {
			return fmt.Errorf("kv put %q: %w", key, err)
		}
		if c.json() {
			return c.printJSON(data)
		}
		if ans.Lease != 0 {
			_, err = fmt.Fprintf(c.stdout, "OK revision %d (lease %d)\n", ans.Revision, ans.Lease)
			return err
		}
		_, err = fmt.Fprintf(c.stdout, "OK revision %d\n", ans.Revision)
		return err
	})
	return cmd
}

func newKVDelCmd(c *client) *cobra.Command {
	var prefix bool
	cmd := &cobra.Command{
		Use:   "del KEY",
		Short: "Delete a key, or with --prefix every key starting with KEY",
		Args:  exactArgs(1),
	}
	cmd.Flags().BoolVar(&prefix, "prefix", false, "delete every key starting with KEY")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		key := args[0]
		q := c.groupQuery()
		if prefix {
			q.Set("prefix", "true")
		}
		var ans struct {
			Revision int64 `json:"revision"`
			Deleted  int64 `json:"deleted"`
		}
		data, err := c.call(cmd.Context(), "DELETE", keyPath(key), q, nil, &ans)
		if err != nil {
			return fmt.Errorf("kv del %q: %w", key, err)
		}
		if c.json() {
			return c.printJSON(data)
		}
		_, err = fmt.Fprintf(c.stdout, "deleted %d (revision %d)\n", ans.Deleted, ans.Revision)
		return err
	})
	return cmd
}

// lsPage is how many entries one list request asks for when the CLI pages
// through a large prefix.
const lsPage = 1000

func newKVLsCmd(c *client) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List keys under PREFIX (all keys without it), sorted",
		Args:  rangeArgs(0, 1),
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many keys (0 = all)")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if limit < 0 {
			return usagef("--limit %d: want 0 (all) or more", limit)
		}
		prefix := ""
		if len(args) == 1 {
			prefix = args[0]
		}
		// Page through with ?after= so that a prefix of any size lists.
		var all listAnswer
		after := ""
		for {
			q := c.groupQuery()
			q.Set("prefix", prefix)
			n := lsPage
			if limit > 0 {
				n = min(n, limit-len(all.Entries))
			}
			q.Set("limit", strconv.Itoa(n))
			if after != "" {
				q.Set("after", after)
			}
			var page listAnswer
			if _, err := c.call(cmd.Context(), "GET", "/v1/kv", q, nil, &page); err != nil {
				if prefix == "" {
					return fmt.Errorf("kv ls: %w", err)
				}
				return fmt.Errorf("kv ls %q: %w", prefix, err)
			}
			if all.Revision == 0 {
				all.Revision = page.Revision
			}
			all.Entries = append(all.Entries, page.Entries...)
			all.More = page.More
			if !page.More || len(page.Entries) == 0 || (limit > 0 && len(all.Entries) >= limit) {
				break
			}
			after = page.Entries[len(page.Entries)-1].Key
		}
		if all.Entries == nil {
			all.Entries = []entry{}
		}
		if c.json() {
			return c.printJSON(mustJSON(all))
		}
		return printEntries(c.stdout, all.Entries)
	})
	return cmd
}

// printEntries is the table of kv ls; values are cut so that one key is one
// line.
func printEntries(w io.Writer, es []entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVALUE\tMOD_REV\tVERSION")
	for _, e := range es {
		v := "(binary)"
		if e.Value != nil {
			v = shorten(*e.Value, 60)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", printable(e.Key), v, e.ModRevision, e.Version)
	}
	return tw.Flush()
}

// printable escapes what would break a table line (newlines, tabs,
// control characters) the way Go quotes strings.
func printable(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// shorten cuts s to n runes and keeps it on one line.
func shorten(s string, n int) string {
	s = printable(s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "..."
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
