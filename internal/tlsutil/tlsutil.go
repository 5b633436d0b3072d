// Package tlsutil loads the mutual-TLS material of a node's peer API (gRPC)
// and reloads it when its files change, so a certificate can be rotated
// without a restart. It also logs refused handshakes once per remote host
// and reason instead of once per reconnection attempt.
//
// Two CAs are known: the server CA (CAFile), whose certificates identify
// servers and are the only ones the Raft transport trusts, and an optional
// client CA (ClientCAFile), accepted on the peer API only, for client-role
// nodes. A client certificate therefore can never speak Raft.
package tlsutil

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dister/dister/internal/errs"
)

// Files are PEM files. CA and, for a node that presents a certificate,
// Cert and Key are required; ClientCA is optional (servers only).
type Files struct {
	CA, Cert, Key string
	ClientCA      string
}

// Source hands out the current TLS configuration of the peer API. With
// Files it re-reads them when their modification time or size changes
// (checked at most once per checkEvery, at a handshake); with a base
// *tls.Config it uses that configuration as it is.
type Source struct {
	files Files
	base  *tls.Config
	log   *slog.Logger

	mu      sync.Mutex
	stamp   string // mtimes and sizes of the files loaded
	checked time.Time
	cur     *material
	badLoad string // the last reload error logged, to log each once

	refused refusals
}

// material is one loaded set of files.
type material struct {
	cert      *tls.Certificate // nil: present none (a client without a certificate)
	serverCAs *x509.CertPool   // the server CA alone: what a client trusts
	peerCAs   *x509.CertPool   // server CA + client CA: what the peer API accepts
	serverRaw [][]byte         // the server CA certificates, to tell a server's chain
}

// checkEvery bounds how often the files are stat'ed.
const checkEvery = time.Second

// New loads files (or takes base, when files.CA is empty) and returns a
// Source. A missing or unreadable file is errs.Invalid.
func New(files Files, base *tls.Config, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Source{files: files, base: base, log: log}
	if files.CA == "" {
		if base == nil {
			return nil, fmt.Errorf("TLS needs a CA file or a *tls.Config: %w", errs.Invalid)
		}
		return s, nil
	}
	stamp, err := s.stat()
	if err != nil {
		return nil, err
	}
	m, err := load(files)
	if err != nil {
		return nil, err
	}
	s.cur, s.stamp, s.checked = m, stamp, time.Now()
	return s, nil
}

// stat fingerprints the files, so a change of any is noticed.
func (s *Source) stat() (string, error) {
	var b bytes.Buffer
	for _, p := range []string{s.files.CA, s.files.Cert, s.files.Key, s.files.ClientCA} {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("TLS file: %w: %w", err, errs.Invalid)
		}
		fmt.Fprintf(&b, "%s:%d:%d;", p, fi.ModTime().UnixNano(), fi.Size())
	}
	return b.String(), nil
}

func load(f Files) (*material, error) {
	m := &material{serverCAs: x509.NewCertPool(), peerCAs: x509.NewCertPool()}
	ca, err := readCerts(f.CA)
	if err != nil {
		return nil, err
	}
	for _, c := range ca {
		m.serverCAs.AddCert(c)
		m.peerCAs.AddCert(c)
		m.serverRaw = append(m.serverRaw, c.Raw)
	}
	if f.ClientCA != "" {
		cca, err := readCerts(f.ClientCA)
		if err != nil {
			return nil, err
		}
		for _, c := range cca {
			m.peerCAs.AddCert(c)
		}
	}
	if f.Cert != "" || f.Key != "" {
		kp, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate %s, key %s: %w: %w", f.Cert, f.Key, err, errs.Invalid)
		}
		m.cert = &kp
	}
	return m, nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("TLS CA file: %w: %w", err, errs.Invalid)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("TLS CA file %s: %w: %w", path, err, errs.Invalid)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("TLS CA file %s holds no certificate: %w", path, errs.Invalid)
	}
	return out, nil
}

// current returns the material in force, reloading it first if the files
// changed. A reload that fails keeps the previous material (a half-written
// file must not cut the node off) and is logged once.
func (s *Source) current() *material {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || time.Since(s.checked) < checkEvery {
		return s.cur
	}
	s.checked = time.Now()
	stamp, err := s.stat()
	if err == nil && stamp == s.stamp {
		return s.cur
	}
	var m *material
	if err == nil {
		m, err = load(s.files)
	}
	if err != nil {
		if msg := err.Error(); msg != s.badLoad {
			s.badLoad = msg
			s.log.Warn("TLS files changed but cannot be loaded; keeping the previous ones", "err", err)
		}
		return s.cur
	}
	s.cur, s.stamp, s.badLoad = m, stamp, ""
	s.log.Info("TLS files reloaded", "cert", s.files.Cert)
	return m
}

// ServerConfig is the peer API's configuration for one handshake: client
// certificates are required and verified against the server CA and the
// client CA.
func (s *Source) ServerConfig() (*tls.Config, error) {
	if s.base != nil && s.files.CA == "" {
		c := s.base.Clone()
		c.ClientAuth = tls.RequireAndVerifyClientCert
		if c.ClientCAs == nil {
			c.ClientCAs = c.RootCAs
		}
		if c.ClientCAs == nil {
			return nil, errors.New("the *tls.Config has neither ClientCAs nor RootCAs to verify peers with")
		}
		return c, nil
	}
	m := s.current()
	if m.cert == nil {
		return nil, errors.New("a server needs a certificate")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*m.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    m.peerCAs,
	}, nil
}

// ClientConfig is the configuration for dialing a server's peer API: the
// server must show a certificate of the server CA; this node shows its own,
// if it has one.
func (s *Source) ClientConfig() *tls.Config {
	if s.base != nil && s.files.CA == "" {
		return s.base.Clone()
	}
	m := s.current()
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: m.serverCAs}
	if m.cert != nil {
		c.Certificates = []tls.Certificate{*m.cert}
	}
	return c
}

// FromServer tells whether a verified peer chain ends in the server CA (a
// server's certificate) rather than the client CA. With a base
// *tls.Config every verified peer counts as a server.
func (s *Source) FromServer(chains [][]*x509.Certificate) bool {
	if s.base != nil && s.files.CA == "" {
		return len(chains) > 0
	}
	m := s.current()
	for _, ch := range chains {
		if len(ch) == 0 {
			continue
		}
		root := ch[len(ch)-1].Raw
		for _, raw := range m.serverRaw {
			if bytes.Equal(raw, root) {
				return true
			}
		}
	}
	return false
}
