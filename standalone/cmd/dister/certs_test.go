package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCertsKeyNotWrittenThroughPlantedTmpFile: a private key goes to a
// file certs creates itself, mode 0600 from the first byte. A leftover or
// planted NAME-key.pem.tmp (here a symlink to a file elsewhere, as anyone
// who can write into DIR could leave) must neither receive the key nor
// become the key file.
func TestCertsKeyNotWrittenThroughPlantedTmpFile(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	stolen := filepath.Join(elsewhere, "stolen")
	for _, name := range []string{"ca-key.pem.tmp", "h1-key.pem.tmp"} {
		if err := os.Symlink(stolen, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	cli(t, nil, "", nil, "certs", "--dir", dir, "h1").ok(t, "certs")
	if b, err := os.ReadFile(stolen); err == nil {
		t.Errorf("a private key was written through the planted symlink (%d bytes at %s)", len(b), stolen)
	}
	for _, name := range []string{"ca-key.pem", "h1-key.pem"} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want a regular file with mode 0600", name, fi.Mode())
		}
	}
}

// TestCertsRefusesNamesOverwritingCAKeys: a HOST or --client NAME whose
// certificate file would be a CA's key file (ca-key, client-ca-key) is a
// usage error; otherwise the CA key is replaced by a certificate and no
// further certificate can be issued.
func TestCertsRefusesNamesOverwritingCAKeys(t *testing.T) {
	dir := t.TempDir()
	cli(t, nil, "", nil, "certs", "--dir", dir, "h1", "--client", "app").ok(t, "certs")
	for _, args := range [][]string{{"ca-key"}, {"--client", "client-ca-key"}, {"h2", "--client", "ca-key"}} {
		msg := cli(t, nil, "", nil, append([]string{"certs", "--dir", dir}, args...)...).fails(t, "certs "+strings.Join(args, " "), 2)
		if !strings.Contains(msg, "-key") {
			t.Errorf("certs %v: message %q does not name the clash", args, msg)
		}
	}
	for _, name := range []string{"ca-key.pem", "client-ca-key.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !strings.Contains(string(b), "PRIVATE KEY") {
			t.Errorf("%s no longer holds a private key: %v %.40q", name, err, b)
		}
	}
}
