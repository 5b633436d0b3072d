package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/dister/dister"
	"github.com/dister/dister/standalone"
)

const (
	// openTimeout bounds Open; a join waits in it for the cluster's leader.
	openTimeout = time.Minute
	// shutdownTimeout is how long in-flight requests get to finish after
	// SIGINT/SIGTERM before their connections are cut.
	shutdownTimeout = 10 * time.Second
)

func newServerCmd(stdout, stderr io.Writer, getenv env) *cobra.Command {
	d := defaultServerConfig()
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a dister server with its REST API",
		Long: `Run a dister server with its REST API.

With --role client the daemon is a client node: it needs --server PEERADDR
(repeatable) and serves the same REST API with no data dir; Gets answer
X-Dister-Cache: hit or miss. Server-only flags are a usage error then.

A server whose --raft-addr or --peer-addr is not a loopback address needs
--tls-ca, --tls-cert and --tls-key (mutual TLS between nodes; "dister certs"
writes them) or --insecure-transport.

A first start without --initial-member or --join makes a cluster of this
server alone (node id 1 unless --node-id says otherwise). A restart from an
existing --data-dir needs none of them: the id is read from the data dir.

Settings come from, strongest first: flags, DISTER_* variables (DISTER_NODE_ID,
DISTER_DATA_DIR, DISTER_RAFT_ADDR, DISTER_PEER_ADDR, DISTER_HTTP_ADDR,
DISTER_INITIAL_MEMBER (entries separated by spaces or ';'), DISTER_JOIN,
DISTER_TOKEN, DISTER_LOG_LEVEL, DISTER_ROLE, DISTER_SERVER, DISTER_ENABLE_SCRIPT_CHECKS,
DISTER_CHECK_TARGET, DISTER_CHECK_OUTPUT_BODY, DISTER_TLS_CA, DISTER_TLS_CERT,
DISTER_TLS_KEY, DISTER_CLIENT_CA, DISTER_INSECURE_TRANSPORT, DISTER_TOKEN_FILE, DISTER_HTTP_CERT,
DISTER_HTTP_KEY, DISTER_HTTP_CLIENT_CA, DISTER_ALLOWED_HOST, DISTER_PEER_TOKEN, DISTER_CONFIG), the YAML file of --config
(keys named as the flags: node-id, data-dir, initial-member: [...], ...),
and the defaults.`,
		Args: noArgs,
	}
	f := cmd.Flags()
	f.Uint64("node-id", 0, "this server's id, > 0 (default: its --initial-member entry by --raft-addr, the data dir's on a restart, the cluster's on --join, else 1)")
	f.String("data-dir", d.DataDir, "directory of the Raft log and state")
	f.String("raft-addr", d.RaftAddr, "host:port of the Raft transport (fixed after the first start)")
	f.String("peer-addr", d.PeerAddr, "host:port of the server-to-server RPC")
	f.String("http-addr", d.HTTPAddr, "host:port of the REST API (a non-loopback address needs --token)")
	f.StringArray("initial-member", nil, "`ID=RAFTADDR,PEERADDR` of a server bootstrapping a new cluster, this one included (repeatable)")
	f.StringArray("join", nil, "`PEERADDR` of a running server to join the cluster through (repeatable)")
	f.String("config", "", "YAML `FILE` with the same settings as the flags")
	f.String("token", "", "require 'Authorization: Bearer TOKEN' on every REST request")
	f.String("log-level", d.LogLevel, "debug, info, warn or error (logs go to stderr)")
	f.Bool("enable-script-checks", false, "let this server run script and custom health checks (commands) of the groups it leads, when the cluster setting script_checks allows them too")
	f.StringArray("check-target", nil, "`CIDR|HOST` health checks of groups this server leads may reach (repeatable; default: anything but link-local addresses)")
	f.Bool("check-output-body", false, "put a failing http/web check's response body (up to 1 KiB) into its output")
	f.String("role", "server", "server, or client: a node that stores nothing and votes in nothing, sends writes to the group leaders, reads from the servers and caches Gets (needs --server; no data dir)")
	f.StringArray("server", nil, "`PEERADDR` of a running server for --role client to discover the cluster from (repeatable)")
	addTransportFlags(f)
	addRESTSecurityFlags(f)
	cmd.RunE = runE(func(c *cobra.Command, _ []string) error {
		// Run as the root command ("dister" alone), c has none of these
		// flags: every setting then comes from the environment or defaults.
		cfg, err := loadServerConfig(f, getenv)
		if err != nil {
			return &usageError{err}
		}
		return serve(c.Context(), cfg, stdout, stderr)
	})
	return cmd
}

// serve runs the server until SIGINT or SIGTERM, then stops taking
// requests, lets those in flight finish, and closes the node.
func serve(ctx context.Context, cfg serverConfig, stdout, stderr io.Writer) error {
	level, err := cfg.logLevel()
	if err != nil {
		return &usageError{err}
	}
	if err := cfg.checkExposure(); err != nil {
		return &usageError{err}
	}
	if err := cfg.checkTransport(); err != nil {
		return &usageError{err}
	}
	opts, err := cfg.openOptions()
	if err != nil {
		return &usageError{err}
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	tokens, err := cfg.loadTokens(logger)
	if err != nil {
		return &usageError{err}
	}
	tlsCfg, err := cfg.restTLS(logger)
	if err != nil {
		return &usageError{err}
	}
	if err := cfg.peerSecurity(&opts, tokens); err != nil {
		return &usageError{err}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts.Logger, opts.Metrics = logger, reg

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// Listen before opening the node so that a busy port fails the start
	// before anything is written to the data dir.
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on --http-addr: %w", err)
	}
	defer ln.Close()
	scheme := "http"
	if tlsCfg != nil {
		ln, scheme = tls.NewListener(ln, tlsCfg), "https"
	}

	octx, cancel := context.WithTimeout(ctx, openTimeout)
	node, err := dister.Open(octx, opts)
	cancel()
	if errors.Is(err, dister.ErrInsecureTransport) {
		return &usageError{err}
	}
	if err != nil {
		return err
	}
	defer node.Close()

	handler := standalone.New(node, standalone.Options{
		Tokens: tokens, AllowedHosts: cfg.allowedHosts(tlsCfg), Logger: logger, Metrics: reg,
	})
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		// Idle keep-alive connections of clients that vanished are not
		// kept forever.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    log.New(&slogWriter{logger}, "", 0),
	}
	// Shutdown waits for the requests in flight, and a watch stream never
	// ends by itself: end them, and their clients resume elsewhere or
	// after the restart.
	srv.RegisterOnShutdown(handler.CloseStreams)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	if cfg.client() {
		fmt.Fprintf(stdout, "dister %s: client node serving HTTP on %s://%s (servers %s)\n",
			dister.Version, scheme, ln.Addr(), strings.Join(cfg.Servers, ", "))
	} else {
		dir, _ := filepath.Abs(cfg.DataDir)
		fmt.Fprintf(stdout, "dister %s: node %d serving HTTP on %s://%s (Raft %s, peer %s), data in %s\n",
			dister.Version, node.ID(), scheme, ln.Addr(), cfg.RaftAddr, cfg.PeerAddr, dir)
	}

	select {
	case err := <-served:
		return fmt.Errorf("serve HTTP: %w", err)
	case <-ctx.Done():
	}
	// A second signal now kills the process the default way.
	stop()
	logger.Info("shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("in-flight requests did not finish in time; closing their connections", "err", err)
		srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Warn("serve HTTP", "err", err)
	}
	if err := node.Close(); err != nil {
		return fmt.Errorf("close node: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// slogWriter carries net/http's own error log (TLS handshakes, broken
// connections) into the daemon's logger.
type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.l.Warn("http: " + string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
