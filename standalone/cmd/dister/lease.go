package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// leaseAnswer is the /v1/leases JSON.
type leaseAnswer struct {
	ID   int64    `json:"id"`
	TTL  string   `json:"ttl"`
	Keys []string `json:"keys"`
}

func leasePath(id int64) string { return "/v1/leases/" + strconv.FormatInt(id, 10) }

// parseLeaseID reads a lease id argument.
func parseLeaseID(cmd *cobra.Command, arg string) (int64, error) {
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || id <= 0 {
		return 0, usagef("%s %q: want a lease id > 0", commandName(cmd), arg)
	}
	return id, nil
}

func newLeaseCmd(c *client) *cobra.Command {
	l := parentCmd("lease", "Grant, renew, revoke and describe leases (REST /v1/leases)")
	l.AddCommand(&cobra.Command{
		Use:   "grant TTL",
		Short: "Grant a lease that expires TTL (e.g. 10s) after its last keepalive",
		Long: `Grant a lease that expires TTL (a duration such as 10s or 1m) after its
last keepalive; keys put with --lease ID are deleted when it expires or is
revoked. Nothing renews it but "dister lease keepalive".`,
		Args: exactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			ttl, err := time.ParseDuration(args[0])
			if err != nil || ttl <= 0 {
				return usagef("lease grant %q: want a duration such as 10s", args[0])
			}
			var ans leaseAnswer
			data, err := c.call(cmd.Context(), "POST", "/v1/leases", c.groupQuery(), jsonBody(map[string]string{"ttl": ttl.String()}), &ans)
			if err != nil {
				return fmt.Errorf("lease grant %s: %w", ttl, err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			_, err = fmt.Fprintf(c.stdout, "lease %d granted (TTL %s)\n", ans.ID, ans.TTL)
			return err
		}),
	}, newLeaseKeepAliveCmd(c), &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a lease now, deleting its keys",
		Args:  exactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(cmd, args[0])
			if err != nil {
				return err
			}
			data, err := c.call(cmd.Context(), "DELETE", leasePath(id), c.groupQuery(), nil, nil)
			if err != nil {
				return fmt.Errorf("lease revoke %d: %w", id, err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			_, err = fmt.Fprintf(c.stdout, "lease %d revoked\n", id)
			return err
		}),
	}, &cobra.Command{
		Use:   "get ID",
		Short: "Show a lease's TTL, then its keys one per line",
		Args:  exactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			id, err := parseLeaseID(cmd, args[0])
			if err != nil {
				return err
			}
			var ans leaseAnswer
			data, err := c.call(cmd.Context(), "GET", leasePath(id), c.groupQuery(), nil, &ans)
			if err != nil {
				return fmt.Errorf("lease get %d: %w", id, err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			fmt.Fprintf(c.stdout, "lease %d (TTL %s)\n", ans.ID, ans.TTL)
			for _, k := range ans.Keys {
				if _, err := fmt.Fprintln(c.stdout, printable(k)); err != nil {
					return err
				}
			}
			return nil
		}),
	})
	return l
}

func newLeaseKeepAliveCmd(c *client) *cobra.Command {
	var forever bool
	cmd := &cobra.Command{
		Use:   "keepalive ID",
		Short: "Renew a lease once, or with --forever every third of its TTL until interrupted",
		Args:  exactArgs(1),
	}
	cmd.Flags().BoolVar(&forever, "forever", false, "keep renewing every TTL/3 until interrupted (Ctrl-C exits 0)")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		id, err := parseLeaseID(cmd, args[0])
		if err != nil {
			return err
		}
		renew := func(ctx context.Context) (time.Duration, error) {
			var ans leaseAnswer
			data, err := c.call(ctx, "PUT", leasePath(id)+"/keepalive", c.groupQuery(), nil, &ans)
			if err != nil {
				return 0, err
			}
			ttl, err := time.ParseDuration(ans.TTL)
			if err != nil {
				return 0, fmt.Errorf("the daemon at %s answered TTL %q: %w", c.addr, ans.TTL, err)
			}
			if c.json() {
				return ttl, c.printJSON(data)
			}
			_, err = fmt.Fprintf(c.stdout, "lease %d kept alive (TTL %s)\n", id, ans.TTL)
			return ttl, err
		}
		if !forever {
			if _, err := renew(cmd.Context()); err != nil {
				return fmt.Errorf("lease keepalive %d: %w", id, err)
			}
			return nil
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := keepRenewing(ctx, renew); err != nil && ctx.Err() == nil {
			return fmt.Errorf("lease keepalive %d: %w", id, err)
		}
		return nil
	})
	return cmd
}

// keepRenewing renews every third of the TTL until ctx ends. A daemon that
// cannot be reached (or has no quorum) is tried again sooner, until the
// lease would have expired since the last renewal; any other error, such
// as the lease being gone, ends it.
func keepRenewing(ctx context.Context, renew func(context.Context) (time.Duration, error)) error {
	ttl, err := renew(ctx)
	if err != nil {
		return err
	}
	last := time.Now()
	wait := ttl / 3
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		// An answer later than a third of the TTL would be of little use.
		rctx, cancel := context.WithTimeout(ctx, max(ttl/3, 500*time.Millisecond))
		t, err := renew(rctx)
		cancel()
		switch {
		case err == nil:
			ttl, last, wait = t, time.Now(), t/3
		case ctx.Err() != nil:
			return nil
		case !retryable(err):
			return err
		case time.Since(last) > ttl:
			return fmt.Errorf("not renewed for %v, longer than its TTL: %w", time.Since(last).Round(time.Millisecond), err)
		default:
			wait = min(ttl/10, time.Second)
		}
	}
}
