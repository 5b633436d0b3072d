package main

import (
	"fmt"
	"net"

	"github.com/spf13/pflag"

	"github.com/dister/dister"
)

// Transport security between nodes: mutual TLS on Raft and the peer API
// (dister.Options.TLS), and the rule that refuses plaintext off loopback.

func addTransportFlags(f *pflag.FlagSet) {
	f.String("tls-ca", "", "`FILE` of the server CA (PEM): turns on mutual TLS for Raft and the peer API; a client node verifies servers with it")
	f.String("tls-cert", "", "`FILE` of this node's certificate (PEM; from \"dister certs\")")
	f.String("tls-key", "", "`FILE` of this node's private key (PEM)")
	f.String("client-ca", "", "`FILE` of the client CA (PEM) whose certificates client-role nodes present; accepted on the peer API only, never by Raft")
	f.Bool("insecure-transport", false, "let a server whose --raft-addr or --peer-addr is not loopback run without TLS (only inside a network that is itself trusted)")
}

func init() {
	settings = append(settings,
		setting{"tls-ca", "DISTER_TLS_CA", setString(func(c *serverConfig) *string { return &c.TLSCA })},
		setting{"tls-cert", "DISTER_TLS_CERT", setString(func(c *serverConfig) *string { return &c.TLSCert })},
		setting{"tls-key", "DISTER_TLS_KEY", setString(func(c *serverConfig) *string { return &c.TLSKey })},
		setting{"client-ca", "DISTER_CLIENT_CA", setString(func(c *serverConfig) *string { return &c.ClientCA })},
		setting{"insecure-transport", "DISTER_INSECURE_TRANSPORT", setBool(func(c *serverConfig) *bool { return &c.InsecureTransport })},
	)
	serverOnly = append(serverOnly, "client-ca", "insecure-transport")
}

// withTransport adds the TLS settings to o.
func (c serverConfig) withTransport(o dister.Options) dister.Options {
	if c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != "" || c.ClientCA != "" {
		o.TLS = &dister.TLS{CAFile: c.TLSCA, CertFile: c.TLSCert, KeyFile: c.TLSKey, ClientCAFile: c.ClientCA}
	}
	o.InsecureTransport = c.InsecureTransport
	return o
}

// checkTransport refuses a server reachable from the network over
// plaintext Raft or peer RPC: anyone who reaches those ports could join
// the cluster or read and write everything.
func (c serverConfig) checkTransport() error {
	if c.client() {
		return nil
	}
	tlsOn := c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != ""
	if tlsOn {
		if c.TLSCA == "" || c.TLSCert == "" || c.TLSKey == "" {
			return fmt.Errorf("--tls-ca, --tls-cert and --tls-key go together (\"dister certs\" writes them)")
		}
		if c.InsecureTransport {
			return fmt.Errorf("--insecure-transport contradicts --tls-ca/--tls-cert/--tls-key")
		}
		return nil
	}
	if c.ClientCA != "" {
		return fmt.Errorf("--client-ca needs --tls-ca, --tls-cert and --tls-key")
	}
	if c.InsecureTransport {
		return nil
	}
	for _, a := range []struct{ flag, addr string }{{"--raft-addr", c.RaftAddr}, {"--peer-addr", c.PeerAddr}} {
		host, _, err := net.SplitHostPort(a.addr)
		if err != nil {
			return fmt.Errorf("%s %q: want host:port: %w", a.flag, a.addr, err)
		}
		if !isLoopback(host) {
			return fmt.Errorf("refusing to run Raft and the peer RPC in plaintext with %s %s: anyone who can reach it could join the cluster "+
				"or read and write everything; give --tls-ca, --tls-cert and --tls-key (\"dister certs\" makes them), listen on a loopback "+
				"address, or set --insecure-transport if the network itself is trusted", a.flag, a.addr)
		}
	}
	return nil
}
