package main

// The service commands of dister v1.5 (its "balance" is the balance
// command of service.go, without flags). They print what v1.5 printed:
// the answer's data as JSON indented by four spaces, or "ok".

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"

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
			return c.printIndented(data)
		})
}

func newGetServiceCmd(c *client) *cobra.Command {
	return legacyCmd("getservice NAME", "Show a service with its nodes, as indented JSON (v1.5)", exactArgs(1),
		func(cmd *cobra.Command, args []string) error {
			data, err := c.legacyCall(cmd.Context(), "GET", "/service", url.Values{"name": {args[0]}}, nil)
			if err != nil {
				return fmt.Errorf("getservice %q: %w", args[0], err)
			}
			return c.printIndented(data)
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
			if _, err := c.legacyCall(cmd.Context(), "DELETE", "/service", nil, jsonBody(names)); err != nil {
				return fmt.Errorf("delservice %s: %w", args[0], err)
			}
			return c.ok()
		})
}
