package main

// The terminal commands of dister v1.5, with its output: they call the
// legacy routes (/kv, /node) and print what v1.5 printed. Unlike v1.5, an
// error goes to stderr with a non-zero exit instead of "ERROR: ..." on
// stdout with exit 0, so that scripts can tell.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// legacyAnswer is v1.5's envelope.
type legacyAnswer struct {
	Result  int             `json:"result"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// legacyCall sends a request to a legacy route and returns its data, or
// the envelope's message as the error.
func (c *client) legacyCall(ctx context.Context, method, path string, q url.Values, body io.Reader) (json.RawMessage, error) {
	data, _, err := c.send(ctx, method, path, q, body)
	if err != nil {
		return nil, err
	}
	var ans legacyAnswer
	if err := json.Unmarshal(data, &ans); err != nil {
		return nil, fmt.Errorf("the daemon at %s answered something other than the v1.5 envelope: %w", c.addr, err)
	}
	if ans.Result != 1 {
		if ans.Message == "" {
			ans.Message = "failed"
		}
		return nil, errors.New(ans.Message)
	}
	return ans.Data, nil
}

// commaList splits "a,b,,c" into its non-empty entries, as v1.5 did.
func commaList(s string) []string {
	var out []string
	for _, v := range strings.Split(strings.TrimSpace(s), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func legacyCmd(use, short string, args cobra.PositionalArgs, f func(cmd *cobra.Command, args []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: args, RunE: runE(f)}
}

func (c *client) ok() error {
	_, err := fmt.Fprintln(c.stdout, "ok")
	return err
}

func newNodesCmd(c *client) *cobra.Command {
	return legacyCmd("nodes", "Show all nodes of the cluster (v1.5)", exactArgs(0), func(cmd *cobra.Command, _ []string) error {
		data, err := c.legacyCall(cmd.Context(), "GET", "/node", nil, nil)
		if err != nil {
			return fmt.Errorf("nodes: %w", err)
		}
		// Fields are read loosely: v1.5 clients saw ids as strings, this
		// daemon may send numbers.
		var nodes []map[string]any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&nodes); err != nil {
			return fmt.Errorf("nodes: the daemon's node list is not an array of objects: %w", err)
		}
		if c.json() {
			return c.printJSON(data)
		}
		const format = "%12s %25s %25s %15s %12s %12s %10s\n"
		fmt.Fprintf(c.stdout, format, "Id", "Name", "Group", "Ip", "Type", "Role", "Status")
		for _, n := range nodes {
			status := "alive"
			if field(n, "status") == "0" {
				status = "dead"
			}
			fmt.Fprintf(c.stdout, format, field(n, "id"), field(n, "name"), field(n, "group"), field(n, "ip"),
				roleName(field(n, "role")), raftRoleName(field(n, "raft")), status)
		}
		return nil
	})
}

func field(m map[string]any, k string) string {
	switch v := m[k].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

func roleName(r string) string {
	switch r {
	case "0":
		return "server"
	case "1":
		return "client"
	case "2":
		return "monitor"
	}
	return "unknown"
}

func raftRoleName(r string) string {
	switch r {
	case "0":
		return "follower"
	case "1":
		return "candidate"
	case "2":
		return "leader"
	}
	return "unknown"
}

func newAddNodeCmd(c *client) *cobra.Command {
	return legacyCmd("addnode ADDR[,ADDR...]", "Add servers by address: host (Raft port 4166) or host:raftport (v1.5)", exactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			addrs := commaList(args[0])
			if len(addrs) == 0 {
				return usagef("addnode: no address in %q", args[0])
			}
			if _, err := c.legacyCall(cmd.Context(), "POST", "/node", nil, jsonBody(addrs)); err != nil {
				return fmt.Errorf("addnode %s: %w", args[0], err)
			}
			return c.ok()
		})
}

func newDelNodeCmd(c *client) *cobra.Command {
	return legacyCmd("delnode ADDR[,ADDR...]", "Remove servers by address (v1.5)", exactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			addrs := commaList(args[0])
			if len(addrs) == 0 {
				return usagef("delnode: no address in %q", args[0])
			}
			if _, err := c.legacyCall(cmd.Context(), "DELETE", "/node", nil, jsonBody(addrs)); err != nil {
				return fmt.Errorf("delnode %s: %w", args[0], err)
			}
			return c.ok()
		})
}

func newKVsCmd(c *client) *cobra.Command {
	return legacyCmd("kvs", "Show all key-value pairs, values cut at 100 characters (v1.5)", exactArgs(0),
		func(cmd *cobra.Command, _ []string) error {
			data, err := c.legacyCall(cmd.Context(), "GET", "/kv", nil, nil)
			if err != nil {
				return fmt.Errorf("kvs: %w", err)
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				return fmt.Errorf("kvs: the daemon's key list is not an object: %w", err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			if len(m) == 0 {
				_, err := fmt.Fprintln(c.stdout, "it's empty")
				return err
			}
			// v1.5 printed in map order; sorted is the same table, stable.
			keys := make([]string, 0, len(m))
			width := 1
			for k := range m {
				keys = append(keys, k)
				width = max(width, len(k))
			}
			sort.Strings(keys)
			w := strconv.Itoa(width)
			fmt.Fprintf(c.stdout, "%-"+w+"s : %s\n", "K", "V")
			for _, k := range keys {
				fmt.Fprintf(c.stdout, "%-"+w+"s : %.100s\n", k, field(m, k))
			}
			return nil
		})
}

func newGetKVCmd(c *client) *cobra.Command {
	return legacyCmd("getkv KEY", "Print a key's value (v1.5)", exactArgs(1), func(cmd *cobra.Command, args []string) error {
		data, err := c.legacyCall(cmd.Context(), "GET", "/kv", url.Values{"k": {args[0]}}, nil)
		if err != nil {
			return fmt.Errorf("getkv %q: %w", args[0], err)
		}
		if c.json() {
			return c.printJSON(data)
		}
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return fmt.Errorf("getkv %q: %w", args[0], err)
		}
		s, ok := v.(string)
		if !ok {
			s = string(data)
		}
		_, err = fmt.Fprintln(c.stdout, s)
		return err
	})
}

func newAddKVCmd(c *client) *cobra.Command {
	return legacyCmd("addkv KEY VALUE", "Set a key (v1.5)", exactArgs(2), func(cmd *cobra.Command, args []string) error {
		if _, err := c.legacyCall(cmd.Context(), "POST", "/kv", nil, jsonBody(map[string]string{args[0]: args[1]})); err != nil {
			return fmt.Errorf("addkv %q: %w", args[0], err)
		}
		return c.ok()
	})
}

func newDelKVCmd(c *client) *cobra.Command {
	return legacyCmd("delkv KEY[,KEY...]", "Delete keys (v1.5)", exactArgs(1), func(cmd *cobra.Command, args []string) error {
		keys := commaList(args[0])
		if len(keys) == 0 {
			return usagef("delkv: no key in %q", args[0])
		}
		if _, err := c.legacyCall(cmd.Context(), "DELETE", "/kv", nil, jsonBody(keys)); err != nil {
			return fmt.Errorf("delkv %s: %w", args[0], err)
		}
		return c.ok()
	})
}
