package main

// The service commands of dister v1.5 (its "balance" is the balance
// command of service.go, without flags). Without -o they print what v1.5
// printed: the answer's data as JSON indented by four spaces, or "ok".

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// printIndented prints a JSON answer indented as v1.5 did.
func (c *client) printIndented(data json.RawMessage) error { return c.printIndent(data, "    ") }

func newServicesCmd(c *client) *cobra.Command {
	return legacyCmd("services", "Show all services with their nodes, as indented JSON (v1.5)", exactArgs(0),
		func(cmd *cobra.Command, _ []string) error {
			data, err := c.legacyCall(cmd.Context(), "GET", "/service", nil, nil)
			if err != nil {
				return fmt.Errorf("services: %w", err)
			}
			if c.v15() {
				return c.printIndented(data)
			}
			if c.json() {
				return c.printJSON(data)
			}
			var all map[string]legacyService
			if err := json.Unmarshal(data, &all); err != nil {
				return fmt.Errorf("services: the daemon's answer is not an object of services: %w", err)
			}
			list := make([]legacyService, 0, len(all))
			for _, sc := range all {
				list = append(list, sc)
			}
			sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
			return printLegacyServices(c.stdout, list)
		})
}

func newGetServiceCmd(c *client) *cobra.Command {
	return legacyCmd("getservice NAME", "Show a service with its nodes, as indented JSON (v1.5)", exactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			data, err := c.legacyCall(cmd.Context(), "GET", "/service", url.Values{"name": {args[0]}}, nil)
			if err != nil {
				return fmt.Errorf("getservice %q: %w", args[0], err)
			}
			if c.v15() {
				return c.printIndented(data)
			}
			if c.json() {
				return c.printJSON(data)
			}
			var sc legacyService
			if err := json.Unmarshal(data, &sc); err != nil {
				return fmt.Errorf("getservice %q: the daemon's answer is not a service: %w", args[0], err)
			}
			return printLegacyServices(c.stdout, []legacyService{sc})
		})
}

func newAddServiceCmd(c *client) *cobra.Command {
	return legacyCmd("addservice FILE", "Add or replace services from a JSON file: an array of {name, type, node} (v1.5)", exactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			body, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("addservice: %w", err)
			}
			if _, err := c.legacyCall(cmd.Context(), "POST", "/service", nil, bytesReader(body)); err != nil {
				return fmt.Errorf("addservice %s: %w", args[0], err)
			}
			return c.ok()
		})
}

func newDelServiceCmd(c *client) *cobra.Command {
	return legacyCmd("delservice NAME[,NAME...]", "Remove services (v1.5)", exactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			names := commaList(args[0])
			if len(names) == 0 {
				return usagef("delservice: no service name in %q", args[0])
			}
			// v1.5's DELETE /service answers ok for a name it does not
			// know (and the route keeps that answer); the command says so.
			var missing, present []string
			for _, name := range names {
				_, err := c.legacyCall(cmd.Context(), "GET", "/service", url.Values{"name": {name}}, nil)
				switch {
				case err == nil:
					present = append(present, name)
				case err.Error() == "service not found":
					missing = append(missing, name)
				default:
					return fmt.Errorf("delservice %s: %w", name, err)
				}
			}
			if len(present) > 0 {
				if _, err := c.legacyCall(cmd.Context(), "DELETE", "/service", nil, jsonBody(present)); err != nil {
					return fmt.Errorf("delservice %s: %w", strings.Join(present, ","), err)
				}
			}
			if len(missing) > 0 {
				done := ""
				if len(present) > 0 {
					done = fmt.Sprintf(" (removed %s)", strings.Join(present, ","))
				}
				return fmt.Errorf("delservice: no service named %s%s", strings.Join(quoteAll(missing), ", "), done)
			}
			return c.ok()
		})
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// legacyService is v1.5's ServiceConfig, read loosely for tables.
type legacyService struct {
	Name string                       `json:"name"`
	Type string                       `json:"type"`
	Node []map[string]json.RawMessage `json:"node"`
}

// printLegacyServices prints one row per node of each service.
func printLegacyServices(w io.Writer, list []legacyService) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tTYPE\tNODE\tADDRESS\tPRIORITY\tSTATUS")
	for _, sc := range list {
		for i, n := range sc.Node {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", sc.Name, sc.Type, i, legacyNodeAddr(n),
				rawText(n["priority"]), legacyStatus(n["status"]))
		}
	}
	return tw.Flush()
}

// legacyNodeAddr is where a v1.5 node is reached: its url, host:port, or
// the script of a custom check.
func legacyNodeAddr(n map[string]json.RawMessage) string {
	if u := rawText(n["url"]); u != "" {
		return u
	}
	if h := rawText(n["host"]); h != "" {
		if p := rawText(n["port"]); p != "" {
			return net.JoinHostPort(h, p)
		}
		return h
	}
	return rawText(n["script"])
}

func legacyStatus(raw json.RawMessage) string {
	switch rawText(raw) {
	case "1":
		return "alive"
	case "0":
		return "dead"
	}
	return "unchecked"
}

// rawText is a JSON string's text or any other value as written.
func rawText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}
