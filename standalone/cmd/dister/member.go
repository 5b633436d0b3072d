package main

import (
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

type member struct {
	ID       uint64 `json:"id"`
	RaftAddr string `json:"raft_addr"`
	PeerAddr string `json:"peer_addr"`
	Leader   bool   `json:"leader"`
	Alive    bool   `json:"alive"`
	Voter    bool   `json:"voter"`
}

func newMemberCmd(c *client) *cobra.Command {
	m := parentCmd("member", "List, add and remove servers (REST /v1/members)")
	var id uint64
	add := &cobra.Command{
		Use:   "add [--id N] RAFTADDR PEERADDR",
		Short: "Add a server; start it afterwards with --join (or with --node-id and --join)",
		Args:  exactArgs(2),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			var ans struct {
				ID uint64 `json:"id"`
			}
			// Id 0 asks the cluster for the next free id.
			body := jsonBody(map[string]string{"raft_addr": args[0], "peer_addr": args[1]})
			data, err := c.call(cmd.Context(), "PUT", "/v1/members/"+strconv.FormatUint(id, 10), nil, body, &ans)
			if err != nil {
				return fmt.Errorf("member add %s: %w", args[0], err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			_, err = fmt.Fprintf(c.stdout, "member %d added (raft %s, peer %s)\n", ans.ID, args[0], args[1])
			return err
		}),
	}
	add.Flags().Uint64Var(&id, "id", 0, "the new server's id (default: the next free one)")
	m.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List the servers",
		Args:  exactArgs(0),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			var ans struct {
				Members []member `json:"members"`
			}
			data, err := c.call(cmd.Context(), "GET", "/v1/members", nil, nil, &ans)
			if err != nil {
				return fmt.Errorf("member ls: %w", err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tRAFT_ADDR\tPEER_ADDR\tLEADER\tALIVE\tVOTER")
			for _, m := range ans.Members {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%t\t%t\t%t\n", m.ID, m.RaftAddr, m.PeerAddr, m.Leader, m.Alive, m.Voter)
			}
			return tw.Flush()
		}),
	}, add, &cobra.Command{
		Use:   "rm ID",
		Short: "Remove a server for good (its id is never reused)",
		Args:  exactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || n == 0 {
				return usagef("member rm %q: want a node id > 0", args[0])
			}
			data, err := c.call(cmd.Context(), "DELETE", "/v1/members/"+args[0], nil, nil, nil)
			if err != nil {
				return fmt.Errorf("member rm %d: %w", n, err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			_, err = fmt.Fprintf(c.stdout, "member %d removed\n", n)
			return err
		}),
	})
	return m
}

type statusAnswer struct {
	NodeID  uint64 `json:"node_id"`
	Role    string `json:"role"`
	Version string `json:"version"`
	Groups  []struct {
		Name     string `json:"name"`
		Leader   uint64 `json:"leader"`
		Revision int64  `json:"revision"`
	} `json:"groups"`
}

func newStatusCmd(c *client) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's node id, version and groups (REST /v1/status)",
		Args:  exactArgs(0),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			var st statusAnswer
			data, err := c.call(cmd.Context(), "GET", "/v1/status", nil, nil, &st)
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			fmt.Fprintf(c.stdout, "node %d (%s), dister %s\n", st.NodeID, st.Role, st.Version)
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GROUP\tLEADER\tREVISION")
			for _, g := range st.Groups {
				leader := "none"
				if g.Leader != 0 {
					leader = strconv.FormatUint(g.Leader, 10)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\n", g.Name, leader, g.Revision)
			}
			return tw.Flush()
		}),
	}
}
