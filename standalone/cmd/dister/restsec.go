package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dister/dister"
)

// restSecurity are the REST API's own security settings (docs/auth.md):
// tokens with roles, TLS, and the host names browsers may use.
type restSecurity struct {
	TokenFile    string     `yaml:"token-file"`
	HTTPCert     string     `yaml:"http-cert"`
	HTTPKey      string     `yaml:"http-key"`
	HTTPClientCA string     `yaml:"http-client-ca"`
	AllowedHosts stringList `yaml:"allowed-host"`
	PeerToken    string     `yaml:"peer-token"`
}

func addRESTSecurityFlags(f *pflag.FlagSet) {
	f.String("token-file", "", "`FILE` of tokens with roles, one a line: ROLE TOKEN [GROUP,GROUP...] (ROLE read, write or admin; reread when it changes)")
	f.String("http-cert", "", "certificate `FILE` (PEM) to serve the REST API over HTTPS with (needs --http-key)")
	f.String("http-key", "", "private key `FILE` (PEM) of --http-cert")
	f.String("http-client-ca", "", "CA `FILE` (PEM): REST clients must present a certificate it signed (needs --http-cert)")
	f.String("peer-token", "", "token this node presents on its peer calls: a --role client daemon to the servers, a server to the other servers (default: --token)")
	f.StringArray("allowed-host", nil, "host `NAME` browsers and clients may reach the REST API by, besides IP addresses, localhost, --http-addr's host and --http-cert's names (repeatable; * allows any)")
}

func init() {
	settings = append(settings,
		setting{"token-file", "DISTER_TOKEN_FILE", setString(func(c *serverConfig) *string { return &c.TokenFile })},
		setting{"http-cert", "DISTER_HTTP_CERT", setString(func(c *serverConfig) *string { return &c.HTTPCert })},
		setting{"http-key", "DISTER_HTTP_KEY", setString(func(c *serverConfig) *string { return &c.HTTPKey })},
		setting{"http-client-ca", "DISTER_HTTP_CLIENT_CA", setString(func(c *serverConfig) *string { return &c.HTTPClientCA })},
		setting{"peer-token", "DISTER_PEER_TOKEN", setString(func(c *serverConfig) *string { return &c.PeerToken })},
		setting{"allowed-host", "DISTER_ALLOWED_HOST", func(c *serverConfig, v string) error {
			c.AllowedHosts = splitList(v)
			return nil
		}},
	)
}

// hasTokens reports whether the REST API needs tokens.
func (c serverConfig) hasTokens() bool { return c.Token != "" || c.TokenFile != "" }

// loadTokens is the token set of --token-file and --token (nil without
// either), for the REST API and, on a server, the peer API. A file that
// cannot be read or parsed fails the start.
func (c serverConfig) loadTokens(logger *slog.Logger) (*dister.Tokens, error) {
	if !c.hasTokens() {
		return nil, nil
	}
	var extra map[string]dister.Grant
	if c.Token != "" {
		extra = map[string]dister.Grant{c.Token: {Access: dister.AccessAdmin}}
	}
	t, err := dister.LoadTokens(c.TokenFile, extra, logger)
	if err != nil && c.TokenFile != "" {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("--token: %w", err)
	}
	return t, nil
}

// peerSecurity sets what the node presents and checks on the peer API:
// its token (--peer-token, else --token), and on a server the token set,
// so that the peer API grants what the REST API grants.
// A server of several with a token set, no token to present and no TLS
// (with TLS its certificate speaks for it) would have its calls to the
// others (joins, liveness) refused: that is a usage error.
func (c serverConfig) peerSecurity(o *dister.Options, tokens *dister.Tokens) error {
	o.Token = c.PeerToken
	if o.Token == "" {
		o.Token = c.Token
	}
	if c.client() {
		return nil
	}
	o.PeerTokens = tokens
	if tokens != nil && o.Token == "" && c.TLSCA == "" && (len(c.Join) > 0 || len(c.InitialMembers) > 1) {
		return errors.New("--token-file without --peer-token (or --token) or --tls-ca: the other servers check peer calls against their tokens " +
			"and would refuse this server's; give every server an admin token with --peer-token, or certificates with --tls-ca/--tls-cert/--tls-key")
	}
	return nil
}

// restTLS is the REST listener's TLS configuration (nil for plain HTTP).
func (c serverConfig) restTLS(logger *slog.Logger) (*tls.Config, error) {
	if c.HTTPCert == "" && c.HTTPKey == "" {
		if c.HTTPClientCA != "" {
			return nil, errors.New("--http-client-ca needs --http-cert and --http-key: client certificates are checked over TLS only")
		}
		return nil, nil
	}
	if c.HTTPCert == "" || c.HTTPKey == "" {
		return nil, errors.New("--http-cert and --http-key go together")
	}
	cert, err := tls.LoadX509KeyPair(c.HTTPCert, c.HTTPKey)
	if err != nil {
		return nil, fmt.Errorf("--http-cert/--http-key: %w", err)
	}
	kp := &keyPair{certFile: c.HTTPCert, keyFile: c.HTTPKey, logger: logger}
	kp.cur.Store(&cert)
	kp.stamp = kp.files()
	// GetCertificate alone (crypto/tls prefers Certificates when a client
	// sends no server name): it serves the files as they are now, so a
	// renewed certificate needs no restart.
	cfg := &tls.Config{GetCertificate: kp.get, MinVersion: tls.VersionTLS12}
	if c.HTTPClientCA != "" {
		pool, err := readPool(c.HTTPClientCA)
		if err != nil {
			return nil, fmt.Errorf("--http-client-ca: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// allowedHosts are the names the REST API answers to (besides IP
// literals and localhost): --allowed-host, --http-addr's host, and the DNS
// names of the REST certificate, which are the names it is meant to be
// reached by.
func (c serverConfig) allowedHosts(t *tls.Config) []string {
	hosts := append([]string(nil), c.AllowedHosts...)
	if h, _, err := net.SplitHostPort(c.HTTPAddr); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	if t != nil {
		if cert, err := t.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
			if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
				hosts = append(hosts, leaf.DNSNames...)
			}
		}
	}
	return hosts
}

func readPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// bindTLSFlags gives a client command --cacert, --cert and --key (env
// DISTER_CACERT, DISTER_CERT, DISTER_KEY) for a daemon serving HTTPS.
func (c *client) bindTLSFlags(cmd *cobra.Command, getenv env) {
	f := cmd.PersistentFlags()
	f.StringVar(&c.cacert, "cacert", getenv("DISTER_CACERT"), "CA `FILE` (PEM) to verify the daemon's HTTPS certificate with (env DISTER_CACERT; implies https://)")
	f.StringVar(&c.cert, "cert", getenv("DISTER_CERT"), "client certificate `FILE` (PEM) for a daemon with --http-client-ca (env DISTER_CERT; needs --key)")
	f.StringVar(&c.key, "key", getenv("DISTER_KEY"), "private key `FILE` (PEM) of --cert (env DISTER_KEY)")
}

// tlsConfig is the client side of REST over TLS (nil when no TLS flag is
// given: the system's roots then verify an https:// --addr).
func (c *client) tlsConfig() (*tls.Config, error) {
	if c.cacert == "" && c.cert == "" && c.key == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.cacert != "" {
		pool, err := readPool(c.cacert)
		if err != nil {
			return nil, usagef("--cacert: %v", err)
		}
		cfg.RootCAs = pool
	}
	if (c.cert == "") != (c.key == "") {
		return nil, usagef("--cert and --key go together")
	}
	if c.cert != "" {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, usagef("--cert/--key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// scheme is https when a TLS flag is given or --addr says so.
func (c *client) scheme() string {
	if c.tls != nil || strings.HasPrefix(c.addr, "https://") {
		return "https"
	}
	return "http"
}

// keyPair serves --http-cert/--http-key and reloads them when they change
// (looked at on a handshake, at most once a second). A pair that does not
// load (say, the certificate replaced before its key) leaves the one in
// force, is logged once, and is tried again at each look.
type keyPair struct {
	certFile, keyFile string
	logger            *slog.Logger
	cur               atomic.Pointer[tls.Certificate]

	mu    sync.Mutex
	next  time.Time
	stamp string // the files' sizes and times when last loaded
	bad   string // the last reload error logged, to log each once
}

func (k *keyPair) files() string {
	var b strings.Builder
	for _, f := range []string{k.certFile, k.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if k.mu.TryLock() {
		if now := time.Now(); now.After(k.next) {
			k.next = now.Add(time.Second)
			// The stamp moves only with a pair that loaded: one caught
			// half-written is tried again at the next look, since its
			// completion may leave sizes and times as they were (two
			// writes within one tick of the file system's clock).
			if st := k.files(); st != k.stamp {
				if cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile); err != nil {
					if msg := err.Error(); msg != k.bad {
						k.bad = msg
						k.logger.Error("REST certificate not reloaded; serving the previous one", "err", err)
					}
				} else {
					k.stamp, k.bad = st, ""
					k.cur.Store(&cert)
					k.logger.Info("REST certificate reloaded", "cert", k.certFile)
				}
			}
		}
		k.mu.Unlock()
	}
	return k.cur.Load(), nil
}
