package dister

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/shard"
	"github.com/dister/dister/internal/tlsutil"
)

// TLS is a node's mutual-TLS material (Options.TLS), PEM files written for
// example by "dister certs".
//
// On a server, CAFile, CertFile and KeyFile are required: the Raft
// transport (dragonboat) reads them when the server starts, and trusts
// every certificate CAFile signed, so a new Raft certificate takes effect
// at the server's next start. The peer API requires a client certificate
// from CAFile or from ClientCAFile, and re-reads all four files when they
// change (checked at most once a second, at a new connection): a rotated
// certificate is used by the next connections without a restart.
// Certificates of ClientCAFile are accepted on the peer API only, never by
// Raft, and cannot join the cluster as a server: that is what client-role
// nodes get. A server's certificate must name its hosts (DNS or IP
// subject alternative names, as in RaftAddr and PeerAddr) and be valid for
// both server and client authentication.
//
// On a client-role node, CAFile (the server CA) verifies the servers and
// CertFile/KeyFile, a certificate of the client CA (or of the server CA),
// is presented to them; ClientCAFile is not used there (ErrInvalid).
type TLS struct {
	CAFile       string // the server CA: PEM, one or more certificates
	CertFile     string // this node's certificate (PEM)
	KeyFile      string // its private key (PEM)
	ClientCAFile string // servers: a second CA accepted on the peer API only

	// Config, if set, is used for the peer API instead of the files, for
	// embedders that manage certificates themselves (GetCertificate,
	// GetClientCertificate...). A server copies it and requires and
	// verifies client certificates against its ClientCAs (RootCAs if
	// ClientCAs is nil); as a client it is used as it is. A server still
	// needs the files for Raft, whose engine reads only files: a server
	// with Config alone is ErrInvalid. A client-role node may give Config
	// alone.
	Config *tls.Config
}

// validateTLS checks Options.TLS and the loopback rule of a server.
func (o *Options) validateTLS(bad func(string, ...any) error) error {
	t := o.TLS
	if t == nil {
		if o.Role != RoleServer || o.InsecureTransport {
			return nil
		}
		for _, a := range []struct{ name, addr string }{{"RaftAddr", o.RaftAddr}, {"PeerAddr", o.PeerAddr}} {
			host, _, err := net.SplitHostPort(a.addr)
			if err != nil || isLoopbackHost(host) {
				continue // a malformed address is reported by validate
			}
			return fmt.Errorf("dister.Open: %s %q is not a loopback address and TLS is off: anyone who can reach it could join the cluster "+
				"or read and write everything; set Options.TLS (certificates from \"dister certs\"), use a loopback address, "+
				"or set InsecureTransport if the network itself is trusted: %w: %w", a.name, a.addr, ErrInsecureTransport, errs.Invalid)
		}
		return nil
	}
	if o.InsecureTransport {
		return bad("TLS and InsecureTransport exclude each other")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return bad("TLS.CertFile and TLS.KeyFile go together")
	}
	if o.Role == RoleClient {
		if t.ClientCAFile != "" {
			return bad("TLS.ClientCAFile is for servers; a client node verifies servers with CAFile")
		}
		if t.Config == nil && t.CAFile == "" {
			return bad("TLS needs CAFile (the servers' CA) or Config")
		}
		return nil
	}
	if t.CAFile == "" || t.CertFile == "" {
		return bad("a server's TLS needs CAFile, CertFile and KeyFile: the Raft transport reads files (Config alone serves only the peer API)")
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsSource loads the peer API's TLS material; nil without TLS.
func (o *Options) tlsSource(log *slog.Logger) (*tlsutil.Source, error) {
	t := o.TLS
	if t == nil {
		return nil, nil
	}
	files := tlsutil.Files{CA: t.CAFile, Cert: t.CertFile, Key: t.KeyFile, ClientCA: t.ClientCAFile}
	if t.Config != nil {
		// The files, if any, are Raft's: the peer API uses Config.
		files = tlsutil.Files{}
	}
	src, err := tlsutil.New(files, t.Config, log)
	if err != nil {
		return nil, fmt.Errorf("dister.Open: %w", err)
	}
	return src, nil
}

// raftTLS is the Raft transport's files; nil without TLS.
func (o *Options) raftTLS() *shard.TLSFiles {
	if o.TLS == nil {
		return nil
	}
	return &shard.TLSFiles{CAFile: o.TLS.CAFile, CertFile: o.TLS.CertFile, KeyFile: o.TLS.KeyFile}
}
