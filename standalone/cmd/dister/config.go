package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/dister/dister"
)

// serverConfig is what "dister server" runs with. The YAML names are the
// flag names, so a config file reads like the command line.
type serverConfig struct {
	NodeID         uint64     `yaml:"node-id"`
	DataDir        string     `yaml:"data-dir"`
	RaftAddr       string     `yaml:"raft-addr"`
	PeerAddr       string     `yaml:"peer-addr"`
	HTTPAddr       string     `yaml:"http-addr"`
	InitialMembers stringList `yaml:"initial-member"`
	Join           stringList `yaml:"join"`
	Token          string     `yaml:"token"`
	LogLevel       string     `yaml:"log-level"`
	// Server-local health-check settings (see dister.Options).
	EnableScriptChecks bool       `yaml:"enable-script-checks"`
	CheckTargets       stringList `yaml:"check-target"`
	CheckOutputBody    bool       `yaml:"check-output-body"`
	// Role is "server" (default) or "client"; a client-role daemon needs
	// Servers (PEERADDRs) and no server-only setting.
	Role    string     `yaml:"role"`
	Servers stringList `yaml:"server"`
	// REST security: token file, TLS, allowed hosts (restsec.go).
	restSecurity `yaml:",inline"`

	// Transport security between nodes (tlsflags.go).
	TLSCA             string `yaml:"tls-ca"`
	TLSCert           string `yaml:"tls-cert"`
	TLSKey            string `yaml:"tls-key"`
	ClientCA          string `yaml:"client-ca"`
	InsecureTransport bool   `yaml:"insecure-transport"`

	// explicit names the settings given (file, environment or flag),
	// for refusing server-only ones in the client role.
	explicit map[string]bool `yaml:"-"`
}

// serverOnly are the settings a client-role daemon has no use for.
var serverOnly = []string{"node-id", "data-dir", "raft-addr", "peer-addr", "initial-member", "join"}

// client tells whether the daemon runs in the client role.
func (c serverConfig) client() bool { return strings.EqualFold(c.Role, "client") }

func defaultServerConfig() serverConfig {
	return serverConfig{
		DataDir:  "./dister-data",
		RaftAddr: "127.0.0.1:4166",
		PeerAddr: "127.0.0.1:4167",
		HTTPAddr: "127.0.0.1:4168",
		LogLevel: "info",
		explicit: map[string]bool{},
	}
}

// stringList takes a YAML sequence or, for one entry, a plain scalar.
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = stringList{n.Value}
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*l = s
	return nil
}

// setting is one configurable: its flag, its environment variable, and how
// a string from either lands in the config.
type setting struct {
	flag, env string
	set       func(c *serverConfig, v string) error
}

func setString(p func(c *serverConfig) *string) func(*serverConfig, string) error {
	return func(c *serverConfig, v string) error { *p(c) = v; return nil }
}

var settings = []setting{
	{"node-id", "DISTER_NODE_ID", func(c *serverConfig, v string) error {
		id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return fmt.Errorf("node id %q is not a number", v)
		}
		c.NodeID = id
		return nil
	}},
	{"data-dir", "DISTER_DATA_DIR", setString(func(c *serverConfig) *string { return &c.DataDir })},
	{"raft-addr", "DISTER_RAFT_ADDR", setString(func(c *serverConfig) *string { return &c.RaftAddr })},
	{"peer-addr", "DISTER_PEER_ADDR", setString(func(c *serverConfig) *string { return &c.PeerAddr })},
	{"http-addr", "DISTER_HTTP_ADDR", setString(func(c *serverConfig) *string { return &c.HTTPAddr })},
	// A member is "ID=RAFT,PEER", commas included, so several in one
	// variable are separated by spaces or semicolons.
	{"initial-member", "DISTER_INITIAL_MEMBER", func(c *serverConfig, v string) error {
		c.InitialMembers = strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ' ' || r == '\t' || r == '\n' })
		return nil
	}},
	{"join", "DISTER_JOIN", func(c *serverConfig, v string) error {
		c.Join = splitList(v)
		return nil
	}},
	{"token", "DISTER_TOKEN", setString(func(c *serverConfig) *string { return &c.Token })},
	{"role", "DISTER_ROLE", setString(func(c *serverConfig) *string { return &c.Role })},
	{"server", "DISTER_SERVER", func(c *serverConfig, v string) error {
		c.Servers = splitList(v)
		return nil
	}},
	{"log-level", "DISTER_LOG_LEVEL", setString(func(c *serverConfig) *string { return &c.LogLevel })},
	{"enable-script-checks", "DISTER_ENABLE_SCRIPT_CHECKS", setBool(func(c *serverConfig) *bool { return &c.EnableScriptChecks })},
	{"check-target", "DISTER_CHECK_TARGET", func(c *serverConfig, v string) error {
		c.CheckTargets = splitList(v)
		return nil
	}},
	{"check-output-body", "DISTER_CHECK_OUTPUT_BODY", setBool(func(c *serverConfig) *bool { return &c.CheckOutputBody })},
}

func setBool(p func(c *serverConfig) *bool) func(*serverConfig, string) error {
	return func(c *serverConfig, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*p(c) = b
		return nil
	}
}

// splitList splits on commas and white space, dropping empty entries.
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// loadServerConfig merges, from weakest to strongest: defaults, the config
// file (--config or DISTER_CONFIG), DISTER_* variables, and the flags given
// on the command line.
func loadServerConfig(flags *pflag.FlagSet, getenv env) (serverConfig, error) {
	cfg := defaultServerConfig()
	path, _ := flags.GetString("config")
	if !flags.Changed("config") {
		path = getenv("DISTER_CONFIG")
	}
	if path != "" {
		if err := readConfigFile(path, &cfg); err != nil {
			return cfg, err
		}
	}
	for _, s := range settings {
		if v := getenv(s.env); v != "" {
			cfg.explicit[s.flag] = true
			if err := s.set(&cfg, v); err != nil {
				return cfg, fmt.Errorf("%s: %w", s.env, err)
			}
		}
	}
	for _, s := range settings {
		f := flags.Lookup(s.flag)
		if f == nil || !f.Changed {
			continue
		}
		cfg.explicit[s.flag] = true
		// Repeatable flags arrive whole, not as one string to split.
		if sa, ok := f.Value.(pflag.SliceValue); ok {
			vals := sa.GetSlice()
			switch s.flag {
			case "initial-member":
				cfg.InitialMembers = vals
			case "join":
				cfg.Join = nil
				for _, v := range vals {
					cfg.Join = append(cfg.Join, splitList(v)...)
				}
			case "check-target":
				cfg.CheckTargets = nil
				for _, v := range vals {
					cfg.CheckTargets = append(cfg.CheckTargets, splitList(v)...)
				}
			case "allowed-host":
				cfg.AllowedHosts = nil
				for _, v := range vals {
					cfg.AllowedHosts = append(cfg.AllowedHosts, splitList(v)...)
				}
			case "server":
				cfg.Servers = nil
				for _, v := range vals {
					cfg.Servers = append(cfg.Servers, splitList(v)...)
				}
			}
			continue
		}
		if err := s.set(&cfg, f.Value.String()); err != nil {
			return cfg, fmt.Errorf("--%s: %w", s.flag, err)
		}
	}
	switch strings.ToLower(cfg.Role) {
	case "", "server":
		if len(cfg.Servers) > 0 {
			return cfg, errors.New("--server is for --role client; a server joins with --join")
		}
	case "client":
		for _, name := range serverOnly {
			if cfg.explicit[name] {
				return cfg, fmt.Errorf("--%s is for servers; a --role client daemon stores nothing and needs only --server", name)
			}
		}
		if len(cfg.Servers) == 0 {
			return cfg, errors.New("--role client needs --server PEERADDR (repeatable): a running server's peer address")
		}
	default:
		return cfg, fmt.Errorf("--role %q: want server or client", cfg.Role)
	}
	return cfg, nil
}

func readConfigFile(path string, cfg *serverConfig) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	// A misspelt setting must not be ignored silently.
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(data, &keys); err == nil {
		for k := range keys {
			cfg.explicit[k] = true
		}
	}
	return nil
}

// parseMembers reads "ID=RAFTADDR,PEERADDR" entries.
func parseMembers(list []string) (map[uint64]dister.Peer, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := make(map[uint64]dister.Peer, len(list))
	for _, s := range list {
		idStr, addrs, ok := strings.Cut(strings.TrimSpace(s), "=")
		raft, peer, ok2 := strings.Cut(addrs, ",")
		id, err := strconv.ParseUint(idStr, 10, 64)
		if !ok || !ok2 || err != nil || id == 0 || raft == "" || peer == "" || strings.Contains(peer, ",") {
			return nil, fmt.Errorf("initial member %q: want ID=RAFTADDR,PEERADDR with ID > 0, e.g. 1=127.0.0.1:4166,127.0.0.1:4167", s)
		}
		if _, dup := m[id]; dup {
			return nil, fmt.Errorf("initial member %d is listed twice", id)
		}
		m[id] = dister.Peer{RaftAddr: raft, PeerAddr: peer}
	}
	return m, nil
}

// identityFile is where a server records its id in its data dir (the SDK's
// file); its presence tells a restart from a first start.
const identityFile = "dister-node.json"

// openOptions turns the config into dister.Options. The node id, when not
// given, is this server's entry in --initial-member (found by --raft-addr),
// else left for the SDK to read from the data dir on a restart or to assign
// on a join, else 1 for the first start of a cluster of one.
func (c serverConfig) openOptions() (dister.Options, error) {
	if c.client() {
		return c.withTransport(dister.Options{Role: dister.RoleClient, Servers: c.Servers}), nil
	}
	members, err := parseMembers(c.InitialMembers)
	if err != nil {
		return dister.Options{}, err
	}
	o := dister.Options{
		NodeID:         c.NodeID,
		DataDir:        c.DataDir,
		RaftAddr:       c.RaftAddr,
		PeerAddr:       c.PeerAddr,
		InitialMembers: members,
		Join:           len(c.Join) > 0,
		Servers:        c.Join,

		EnableScriptChecks: c.EnableScriptChecks,
		CheckOutputBody:    c.CheckOutputBody,
		CheckTargets:       c.CheckTargets,
	}
	o = c.withTransport(o)
	if o.Join && members != nil {
		return o, errors.New("--join and --initial-member exclude each other: a server either bootstraps a new cluster or joins a running one")
	}
	if o.NodeID != 0 || o.Join {
		return o, nil
	}
	_, err = os.Stat(filepath.Join(c.DataDir, identityFile))
	restart := err == nil
	if members != nil {
		for id, p := range members {
			if p.RaftAddr == c.RaftAddr {
				o.NodeID = id
				return o, nil
			}
		}
		if restart {
			// The SDK ignores the members on a restart but would want an
			// id to check them against: the data dir has it.
			o.InitialMembers = nil
			return o, nil
		}
		return o, fmt.Errorf("--raft-addr %s is in no --initial-member entry: give --node-id or list this server", c.RaftAddr)
	}
	if !restart {
		o.NodeID = 1
	}
	return o, nil
}

func (c serverConfig) logLevel() (slog.Level, error) {
	var l slog.Level
	switch strings.ToLower(c.LogLevel) {
	case "debug":
		l = slog.LevelDebug
	case "info", "":
		l = slog.LevelInfo
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return l, fmt.Errorf("log level %q: want debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

// checkExposure refuses a REST listener reachable from the network without
// a token: the API can rewrite the whole configuration.
func (c serverConfig) checkExposure() error {
	host, _, err := net.SplitHostPort(c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr %q: want host:port: %w", c.HTTPAddr, err)
	}
	if c.hasTokens() || isLoopback(host) {
		return nil
	}
	return fmt.Errorf("refusing to serve the REST API on %s without a token: it would be open to the network; "+
		"set --token (or DISTER_TOKEN) or --token-file, or listen on a loopback address such as 127.0.0.1", c.HTTPAddr)
}

// isLoopback is true for localhost and loopback IPs; an empty host means
// every interface and a name other than localhost could be anything.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
