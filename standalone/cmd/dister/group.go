package main

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"
)

func newGroupCmd(c *client) *cobra.Command {
	g := parentCmd("group", "List, create and remove groups (REST /v1/groups)")
	g.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List the groups",
		Args:  exactArgs(0),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			var ans struct {
				Groups []string `json:"groups"`
			}
			data, err := c.call(cmd.Context(), "GET", "/v1/groups", nil, nil, &ans)
			if err != nil {
				return fmt.Errorf("group ls: %w", err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			for _, name := range ans.Groups {
				fmt.Fprintln(c.stdout, name)
			}
			return nil
		}),
	}, &cobra.Command{
		Use:   "create NAME",
		Short: "Create a group",
		Args:  exactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			data, err := c.call(cmd.Context(), "PUT", "/v1/groups/"+url.PathEscape(args[0]), nil, nil, nil)
			if err != nil {
				return fmt.Errorf("group create %q: %w", args[0], err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			_, err = fmt.Fprintf(c.stdout, "group %q created\n", args[0])
			return err
		}),
	}, &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a group and all its data",
		Args:  exactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			data, err := c.call(cmd.Context(), "DELETE", "/v1/groups/"+url.PathEscape(args[0]), nil, nil, nil)
			if err != nil {
				return fmt.Errorf("group rm %q: %w", args[0], err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			_, err = fmt.Fprintf(c.stdout, "group %q removed\n", args[0])
			return err
		}),
	})
	return g
}
