package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// instance is the /v1 instance JSON.
type instance struct {
	Service     string            `json:"service"`
	ID          string            `json:"id"`
	Address     string            `json:"address"`
	Priority    int               `json:"priority"`
	Tags        []string          `json:"tags"`
	Meta        map[string]string `json:"meta"`
	Check       *instanceCheck    `json:"check,omitempty"`
	Status      string            `json:"status,omitempty"`
	Output      string            `json:"output,omitempty"`
	LastChecked string            `json:"last_checked,omitempty"`
	ModRevision int64             `json:"mod_revision,omitempty"`
}

type instanceCheck struct {
	Type                    string `json:"type"`
	Target                  string `json:"target,omitempty"`
	Interval                string `json:"interval,omitempty"`
	Timeout                 string `json:"timeout,omitempty"`
	TTL                     string `json:"ttl,omitempty"`
	DeregisterCriticalAfter string `json:"deregister_critical_after,omitempty"`
}

func instancePath(service, id string) string {
	return "/v1/services/" + url.PathEscape(service) + "/instances/" + url.PathEscape(id)
}

func newServiceCmd(c *client) *cobra.Command {
	s := parentCmd("service", "Register, find and remove service instances (REST /v1/services)")
	s.AddCommand(newServiceRegisterCmd(c), &cobra.Command{
		Use:   "deregister NAME ID",
		Short: "Remove an instance",
		Args:  exactArgs(2),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			data, err := c.call(cmd.Context(), "DELETE", instancePath(args[0], args[1]), c.groupQuery(), nil, nil)
			if err != nil {
				return fmt.Errorf("service deregister %s/%s: %w", args[0], args[1], err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			_, err = fmt.Fprintf(c.stdout, "instance %s/%s deregistered\n", args[0], args[1])
			return err
		}),
	}, &cobra.Command{
		Use:   "heartbeat NAME ID",
		Short: "Keep an instance with a ttl check alive for another TTL",
		Args:  exactArgs(2),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			data, err := c.call(cmd.Context(), "PUT", instancePath(args[0], args[1])+"/heartbeat", c.groupQuery(), nil, nil)
			if err != nil {
				return fmt.Errorf("service heartbeat %s/%s: %w", args[0], args[1], err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			_, err = fmt.Fprintf(c.stdout, "instance %s/%s kept alive\n", args[0], args[1])
			return err
		}),
	}, &cobra.Command{
		Use:   "ls",
		Short: "List the services with their instance counts",
		Args:  exactArgs(0),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			var ans struct {
				Services []struct {
					Name      string `json:"name"`
					Instances int    `json:"instances"`
					Passing   int    `json:"passing"`
				} `json:"services"`
			}
			data, err := c.call(cmd.Context(), "GET", "/v1/services", c.groupQuery(), nil, &ans)
			if err != nil {
				return fmt.Errorf("service ls: %w", err)
			}
			if c.json() {
				return c.printJSON(data)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tINSTANCES\tPASSING")
			for _, s := range ans.Services {
				fmt.Fprintf(tw, "%s\t%d\t%d\n", s.Name, s.Instances, s.Passing)
			}
			return tw.Flush()
		}),
	}, newServiceGetCmd(c))
	return s
}

func newServiceRegisterCmd(c *client) *cobra.Command {
	var (
		in                                 instance
		chk                                instanceCheck
		meta                               []string
		interval, timeout, ttl, deregAfter time.Duration
	)
	cmd := &cobra.Command{
		Use:   "register NAME ID",
		Short: "Register an instance, or replace the one with that id",
		Long: `Register an instance of service NAME with id ID, or replace the one with
that id. Without --check-type it has no health check and always passes.
Check types: http, web, tcp, mysql, pgsql, script, custom (script and
custom only while "dister settings --script-checks=true"), ttl (kept alive
by "dister service heartbeat" within --check-ttl) and never.`,
		Args: exactArgs(2),
	}
	f := cmd.Flags()
	f.StringVar(&in.Address, "address", "", "where clients reach the instance: host:port or a URL")
	f.IntVar(&in.Priority, "priority", 0, "weight in priority-weighted picks (0 = standby)")
	f.StringArrayVar(&in.Tags, "tag", nil, "a tag (repeatable)")
	f.StringArrayVar(&meta, "meta", nil, "metadata KEY=VALUE (repeatable)")
	f.StringVar(&chk.Type, "check-type", "", "health check type (see above)")
	f.StringVar(&chk.Target, "check-target", "", "what the check probes: URL, host:port, DSN or command line")
	f.DurationVar(&interval, "check-interval", 0, "time between probes (default 10s)")
	f.DurationVar(&timeout, "check-timeout", 0, "time one probe may take (default: the smaller of 2s and the interval)")
	f.DurationVar(&ttl, "check-ttl", 0, "TTL of a ttl check")
	f.DurationVar(&deregAfter, "deregister-critical-after", 0, "remove the instance once critical this long (0 = never)")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		service, id := args[0], args[1]
		body := struct {
			Address  string            `json:"address"`
			Priority int               `json:"priority"`
			Tags     []string          `json:"tags,omitempty"`
			Meta     map[string]string `json:"meta,omitempty"`
			Check    *instanceCheck    `json:"check,omitempty"`
		}{Address: in.Address, Priority: in.Priority, Tags: in.Tags}
		for _, kv := range meta {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return usagef("--meta %q: want KEY=VALUE", kv)
			}
			if body.Meta == nil {
				body.Meta = map[string]string{}
			}
			body.Meta[k] = v
		}
		for name, d := range map[string]time.Duration{"--check-interval": interval, "--check-timeout": timeout,
			"--check-ttl": ttl, "--deregister-critical-after": deregAfter} {
			if d < 0 {
				return usagef("%s %v: want a positive duration", name, d)
			}
		}
		ch := chk
		ch.Interval, ch.Timeout, ch.TTL, ch.DeregisterCriticalAfter = durFlag(interval), durFlag(timeout), durFlag(ttl), durFlag(deregAfter)
		if ch != (instanceCheck{}) {
			if ch.Type == "" {
				return usagef("the --check-* flags need --check-type")
			}
			body.Check = &ch
		}
		var ans instance
		data, err := c.call(cmd.Context(), "PUT", instancePath(service, id), c.groupQuery(), jsonBody(body), &ans)
		if err != nil {
			return fmt.Errorf("service register %s/%s: %w", service, id, withFlagNames(err))
		}
		if c.json() {
			return c.printJSON(data)
		}
		_, err = fmt.Fprintf(c.stdout, "instance %s/%s registered (%s)\n", service, id, ans.Status)
		return err
	})
	return cmd
}

// durFlag is a duration for the JSON body, "" for zero (the default).
func durFlag(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func newServiceGetCmd(c *client) *cobra.Command {
	var passing bool
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a service's instances",
		Args:  exactArgs(1),
	}
	cmd.Flags().BoolVar(&passing, "passing", false, "only the passing instances")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		q := c.groupQuery()
		if passing {
			q.Set("passing", "true")
		}
		var ans struct {
			Instances []instance `json:"instances"`
		}
		data, err := c.call(cmd.Context(), "GET", "/v1/services/"+url.PathEscape(args[0]), q, nil, &ans)
		if err != nil {
			return fmt.Errorf("service get %q: %w", args[0], err)
		}
		if c.json() {
			return c.printJSON(data)
		}
		return printInstances(c.stdout, ans.Instances)
	})
	return cmd
}

// printInstances prints /v1 instances as a table.
func printInstances(w io.Writer, list []instance) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tPRIORITY\tSTATUS\tCHECK\tTAGS")
	for _, in := range list {
		check := "-"
		if in.Check != nil {
			check = in.Check.Type
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", in.ID, printable(in.Address), in.Priority, in.Status, check,
			printable(strings.Join(in.Tags, ",")))
	}
	return tw.Flush()
}

func newBalanceCmd(c *client) *cobra.Command {
	var strategy, key string
	cmd := &cobra.Command{
		Use:   "balance NAME",
		Short: "Pick one alive instance of a service and print it as indented JSON (v1.5)",
		Long: `Pick one alive instance of service NAME and print it as indented JSON.

Alone, as in dister v1.5, it asks the legacy route /balance (group
"default", priority-weighted) and prints the picked node object.
With --strategy, --key or --group it asks /v1/balance/NAME instead and
prints the /v1 instance: --strategy priority (the default), round_robin
or hash (by --key; --key alone means --strategy hash).`,
		Args: exactArgs(1),
	}
	cmd.Flags().StringVar(&strategy, "strategy", "", "priority, round_robin or hash (uses /v1/balance)")
	cmd.Flags().StringVar(&key, "key", "", "pick by consistent hashing of this key (--strategy hash)")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		name := args[0]
		if strategy == "" && key == "" && c.group == "" {
			data, err := c.legacyCall(cmd.Context(), "GET", "/balance", url.Values{"name": {name}}, nil)
			if err != nil {
				return fmt.Errorf("balance %q: %w", name, err)
			}
			switch c.output {
			case "":
				return c.printIndented(data)
			case "json":
				return c.printJSON(data)
			}
			var n map[string]json.RawMessage
			if err := json.Unmarshal(data, &n); err != nil {
				return fmt.Errorf("balance %q: the daemon's answer is not a node: %w", name, err)
			}
			if c.output == "addr" {
				_, err := fmt.Fprintln(c.stdout, legacyNodeAddr(n))
				return err
			}
			return printLegacyServices(c.stdout, []legacyService{{Name: name, Node: []map[string]json.RawMessage{n}}})
		}
		if key != "" && strategy == "" {
			strategy = "hash"
		}
		if strategy == "hash" && key == "" {
			return usagef("--strategy hash needs --key")
		}
		q := c.groupQuery()
		if strategy != "" {
			q.Set("strategy", strategy)
		}
		if key != "" {
			q.Set("key", key)
		}
		var in instance
		data, err := c.call(cmd.Context(), "GET", "/v1/balance/"+url.PathEscape(name), q, nil, &in)
		if err != nil {
			return fmt.Errorf("balance %q: %w", name, err)
		}
		switch c.output {
		case "":
			// As before -o existed: the /v1 instance, indented.
			return c.printIndented(data)
		case "json":
			return c.printJSON(data)
		case "addr":
			_, err := fmt.Fprintln(c.stdout, in.Address)
			return err
		}
		return printInstances(c.stdout, []instance{in})
	})
	return cmd
}

func newSettingsCmd(c *client) *cobra.Command {
	var script bool
	cmd := &cobra.Command{
		Use:   "settings",
		Short: "Show the cluster settings, or change them with flags",
		Long: `Show the cluster settings, or with --script-checks=true|false change them.

script_checks allows script and custom health checks, which run a command
on the group leader: whoever may register an instance could run code on
the servers. Off by default.`,
		Args: exactArgs(0),
	}
	cmd.Flags().BoolVar(&script, "script-checks", false, "allow script and custom health checks (true or false)")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		var ans struct {
			ScriptChecks bool `json:"script_checks"`
		}
		var (
			data []byte
			err  error
		)
		if cmd.Flags().Changed("script-checks") {
			data, err = c.call(cmd.Context(), "PUT", "/v1/settings", nil, jsonBody(map[string]bool{"script_checks": script}), &ans)
		} else {
			data, err = c.call(cmd.Context(), "GET", "/v1/settings", nil, nil, &ans)
		}
		if err != nil {
			return fmt.Errorf("settings: %w", err)
		}
		if c.json() {
			return c.printJSON(data)
		}
		_, err = fmt.Fprintf(c.stdout, "script_checks: %s\n", strconv.FormatBool(ans.ScriptChecks))
		return err
	})
	return cmd
}

// checkFields maps the check fields the daemon names in its errors to the
// flags that set them.
var checkFields = regexp.MustCompile(`\b(interval|timeout|ttl|deregister_critical_after) (-?[0-9])`)

// withFlagNames rewords a daemon's refusal of a registration in terms of
// this command's flags ("interval 1ms outside ..." -> "--check-interval
// 1ms outside ...").
func withFlagNames(err error) error {
	var ae *apiError
	if !errors.As(err, &ae) || ae.Code != "invalid" {
		return err
	}
	out := *ae
	out.Message = checkFields.ReplaceAllStringFunc(ae.Message, func(m string) string {
		sub := checkFields.FindStringSubmatch(m)
		flag := map[string]string{"interval": "--check-interval", "timeout": "--check-timeout",
			"ttl": "--check-ttl", "deregister_critical_after": "--deregister-critical-after"}[sub[1]]
		return flag + " " + sub[2]
	})
	return &out
}
