package main

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dister/dister/internal/testcluster"
)

// TestRESTKeyPairRetriesAFailedReload: a renewed --http-cert/--http-key
// that did not load when first looked at (caught half-written) is tried
// again at the next look, not only at the next change of the files'
// sizes and times: two writes within one tick of a file system's clock
// leave both as they were, and the daemon would otherwise serve the old
// certificate until restarted. (The peer API's tlsutil.Source retries.)
func TestRESTKeyPairRetriesAFailedReload(t *testing.T) {
	dir := t.TempDir()
	cli(t, nil, "", nil, "certs", "--dir", dir, "h1", "h2").ok(t, "certs")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	certFile, keyFile := filepath.Join(dir, "rest.pem"), filepath.Join(dir, "rest-key.pem")
	write := func(path string, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(certFile, read("h1.pem"))
	write(keyFile, read("h1-key.pem"))
	first, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	kp := &keyPair{certFile: certFile, keyFile: keyFile, logger: testcluster.Logger()}
	kp.cur.Store(&first)
	kp.stamp = kp.files()

	// Renewal to h2, caught with the key half-written: same length, wrong
	// bytes.
	newKey := read("h2-key.pem")
	half := bytes.Clone(newKey)
	copy(half[len(half)/2:], bytes.Repeat([]byte("A"), len(half)/2-30))
	write(certFile, read("h2.pem"))
	write(keyFile, half)
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	kp.next = time.Time{}
	if c, _ := kp.get(nil); !bytes.Equal(c.Certificate[0], first.Certificate[0]) {
		t.Fatal("a half-written pair was served")
	}
	// The key's write completes within the same clock tick.
	write(keyFile, newKey)
	if err := os.Chtimes(keyFile, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	kp.next = time.Time{}
	c, _ := kp.get(nil)
	want, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Certificate[0], want.Certificate[0]) {
		t.Error("the renewed pair, complete now, is not served: the failed reload was not tried again")
	}
}
