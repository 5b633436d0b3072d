package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newCertsCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs --dir DIR [HOST...] [--client NAME]",
		Short: "Write a CA and certificates for mutual TLS between servers (and client nodes)",
		Long: `Write the certificates a cluster needs for mutual TLS between its nodes.

In DIR it writes ca.pem and ca-key.pem (a new CA, or the one already there)
and, for each HOST (a DNS name or an IP address, as the servers reach each
other), HOST.pem and HOST-key.pem: a server certificate valid for both
server and client authentication. Give each server its own:

  dister server --tls-ca DIR/ca.pem --tls-cert DIR/HOST.pem --tls-key DIR/HOST-key.pem ...

--client NAME writes client-ca.pem and client-ca-key.pem (once; reused
later) and NAME.pem and NAME-key.pem, a certificate for a --role client
node; servers accept it with --client-ca DIR/client-ca.pem, on the peer API
only: a client certificate can never speak Raft.

Keys are ECDSA P-256, written with mode 0600. Keep ca-key.pem and
client-ca-key.pem off the servers: they are needed only to issue more.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if c, _ := cmd.Flags().GetString("client"); len(args) == 0 && c == "" {
				return usagef("%s wants at least one HOST or --client NAME (usage: %s)", cmd.CommandPath(), cmd.UseLine())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("dir", "", "`DIR` to write the files into (created if missing; required)")
	f.String("client", "", "`NAME` of a client-role node to write a client certificate for")
	f.Int("days", 365, "validity of the certificates written, in days (a new CA gets ten years)")
	cmd.RunE = runE(func(c *cobra.Command, hosts []string) error {
		dir, _ := f.GetString("dir")
		client, _ := f.GetString("client")
		days, _ := f.GetInt("days")
		if dir == "" {
			return usagef("certs needs --dir DIR")
		}
		if days <= 0 {
			return usagef("--days %d: want a positive number", days)
		}
		for _, n := range append(append([]string{}, hosts...), client) {
			if strings.ContainsAny(n, `/\`) || n == "." || n == ".." || strings.HasPrefix(n, "-") {
				return usagef("%q cannot be a file name in --dir", n)
			}
			// NAME.pem of "ca-key" would be ca-key.pem: the CA's key.
			if n == "ca" || n == "client-ca" || n == "ca-key" || n == "client-ca-key" {
				return usagef("%q is the name of a CA's files (%s.pem would replace one)", n, n)
			}
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		valid := time.Duration(days) * 24 * time.Hour
		if len(hosts) > 0 {
			ca, err := loadOrMakeCA(stdout, dir, "ca", "dister server CA")
			if err != nil {
				return err
			}
			for _, h := range hosts {
				if err := issue(stdout, ca, dir, h, valid, true); err != nil {
					return err
				}
			}
		}
		if client != "" {
			cca, err := loadOrMakeCA(stdout, dir, "client-ca", "dister client CA")
			if err != nil {
				return err
			}
			if err := issue(stdout, cca, dir, client, valid, false); err != nil {
				return err
			}
		}
		return nil
	})
	return cmd
}

type certAuthority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// loadOrMakeCA reuses DIR/NAME.pem and DIR/NAME-key.pem, or writes a new
// CA there when neither exists.
func loadOrMakeCA(stdout io.Writer, dir, name, cn string) (*certAuthority, error) {
	certPath, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	switch {
	case cerr == nil && kerr == nil:
		cert, err := parseCert(certPEM)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", certPath, err)
		}
		key, err := parseKey(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyPath, err)
		}
		fmt.Fprintf(stdout, "using the CA in %s\n", certPath)
		return &certAuthority{cert: cert, key: key}, nil
	case errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist):
	case cerr != nil && !errors.Is(cerr, fs.ErrNotExist):
		return nil, cerr
	case kerr != nil && !errors.Is(kerr, fs.ErrNotExist):
		return nil, kerr
	default:
		return nil, fmt.Errorf("%s and %s: one exists without the other; move it away or restore its pair", certPath, keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writeKeyPair(certPath, keyPath, der, key); err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "wrote %s and %s (a new CA)\n", certPath, keyPath)
	return &certAuthority{cert: cert, key: key}, nil
}

// issue writes DIR/NAME.pem and DIR/NAME-key.pem signed by ca: a server
// certificate for host (both server and client authentication, since
// servers dial each other) or a client one.
func issue(stdout io.Writer, ca *certAuthority, dir, name string, valid time.Duration, server bool) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(valid),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = []net.IP{ip}
		} else {
			tmpl.DNSNames = []string{name}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := writeKeyPair(certPath, keyPath, der, key); err != nil {
		return err
	}
	kind := "server"
	if !server {
		kind = "client"
	}
	fmt.Fprintf(stdout, "wrote %s and %s (%s certificate, valid until %s)\n", certPath, keyPath, kind, tmpl.NotAfter.UTC().Format(time.DateOnly))
	return nil
}

// writeKeyPair writes the key (0600) before the certificate, each through
// a rename, so a reader never sees a certificate without its key.
func writeKeyPair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFile writes data to path through a file of its own: CreateTemp
// makes a new file (O_EXCL, mode 0600) under a random name, so a leftover
// or planted PATH.tmp, or a symlink there, can neither receive a key nor
// become the file renamed into place.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, mode)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

func parseCert(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func parseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		if ek, err2 := x509.ParseECPrivateKey(b.Bytes); err2 == nil {
			return ek, nil
		}
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("the key cannot sign")
	}
	return s, nil
}

// newSerial is a random 126-bit serial number (crypto/rand does not fail
// since Go 1.24; a zero serial would only make the certificate odd).
func newSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if n == nil {
		n = big.NewInt(1)
	}
	return n
}
