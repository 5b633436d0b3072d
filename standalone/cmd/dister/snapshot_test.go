package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSnapshotCommands: save (with the token, with a progress bar on
// stderr, without the token refused), status of a good and of a damaged
// file, restore into a new data dir (and refusing the damaged file with
// nothing written), and a daemon started on the restored dir serving the
// data.
func TestSnapshotCommands(t *testing.T) {
	d := newDaemon(t, "old", "--token", "s3cret")
	d.token = "s3cret"
	d.start()
	d.waitReady()
	for i := range 20 {
		d.mustJSONCall("PUT", fmt.Sprintf("/v1/kv/app/k%02d", i), []byte(fmt.Sprintf("v%d", i)), nil)
	}
	d.mustJSONCall("PUT", "/v1/services/api/instances/a1", []byte(`{"address":"127.0.0.1:9999","check":{"type":"never"}}`), nil)

	dir := t.TempDir()
	file := filepath.Join(dir, "c.snap")
	tok := []string{"DISTER_TOKEN=s3cret"}
	if line := cli(t, d, "", nil, "snapshot", "save", file, "--no-progress").fails(t, "save without a token", exitFailure); !strings.Contains(line, "unauthorized") {
		t.Errorf("save without a token: %s", line)
	}
	if parts, _ := filepath.Glob(file + "*.part"); len(parts) != 0 {
		t.Errorf("a refused save left %v", parts)
	}
	r := cli(t, d, "", tok, "snapshot", "save", file)
	if r.code != 0 || !strings.Contains(r.stderr, "snapshot") {
		t.Fatalf("save: exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
	}
	wantMatch(t, "save output", r.stdout, `(?s)sha256 +[0-9a-f]{64} \(ok\).*default +\d+ +20 +1 +0 +\d+`)

	out := cli(t, nil, "", nil, "snapshot", "status", file).ok(t, "status")
	wantMatch(t, "status", out, `(?s)format +1.*sha256 +[0-9a-f]{64} \(ok\).*default +\d+ +20 +1 +0 +\d+`)

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// Damage a value's byte, which only the SHA-256 can catch (the middle
	// byte of the file, damaged before, was at times a length, and the
	// file was refused for its structure instead).
	i := bytes.Index(data, []byte("v19"))
	if i < 0 {
		t.Fatal(`no "v19" in the backup file`)
	}
	data[i+1] ^= 1
	bad := filepath.Join(dir, "bad.snap")
	if err := os.WriteFile(bad, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r = cli(t, nil, "", nil, "snapshot", "status", bad)
	if r.code != exitFailure || !strings.Contains(r.stdout, "(FAILED)") || !strings.Contains(r.stderr, "SHA-256 mismatch") {
		t.Errorf("status of a damaged file: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	raft, peer := freeAddr(t), freeAddr(t)
	member := "1=" + raft + "," + peer
	badDir := filepath.Join(dir, "bad-data")
	line := cli(t, nil, "", nil, "snapshot", "restore", bad, "--data-dir", badDir, "--node-id", "1", "--initial-member", member).
		fails(t, "restore of a damaged file", exitFailure)
	if !strings.Contains(line, "SHA-256 mismatch") {
		t.Errorf("restore of a damaged file: %s", line)
	}
	if _, err := os.Stat(badDir); !os.IsNotExist(err) {
		t.Errorf("a refused restore created %s (%v)", badDir, err)
	}

	n := newDaemon(t, "new")
	n.args = []string{"--data-dir", filepath.Join(n.dir, "data"), "--raft-addr", raft, "--peer-addr", peer,
		"--http-addr", n.httpAddr, "--initial-member", member, "--log-level", "warn"}
	cli(t, nil, "", nil, "snapshot", "restore", file, "--data-dir", n.flag("data-dir"), "--node-id", "1", "--initial-member", member).
		ok(t, "restore")
	d.stop()
	n.start()
	n.waitReady()
	code, body, err := n.do("GET", "/v1/kv/app/k07?raw", nil)
	if err != nil || code != http.StatusOK || string(body) != "v7" {
		t.Errorf("restored key: %d %q %v", code, body, err)
	}
	var svc struct {
		Instances []struct {
			ID string `json:"id"`
		} `json:"instances"`
	}
	n.mustJSONCall("GET", "/v1/services/api", nil, &svc)
	if len(svc.Instances) != 1 || svc.Instances[0].ID != "a1" {
		t.Errorf("restored instances: %+v", svc)
	}
}

// TestSnapshotSaveTempFile: save writes to a temporary file of its own
// next to FILE. Before the fix it opened FILE.part with O_TRUNC, following
// a symlink planted there (a shared backup dir): the victim file was
// truncated and overwritten with the daemon's answer, here "garbage",
// before the answer was even checked.
func TestSnapshotSaveTempFile(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write([]byte("garbage"))
	}))
	defer srv.Close()
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "c.snap")
	if err := os.Symlink(victim, file+".part"); err != nil {
		t.Skipf("symlink: %v", err)
	}
	addr := strings.TrimPrefix(srv.URL, "http://")
	line := cli(t, nil, "", []string{"DISTER_ADDR=" + addr}, "snapshot", "save", file, "--no-progress").
		fails(t, "save of a damaged answer", exitFailure)
	if !strings.Contains(line, "not a dister backup") {
		t.Errorf("save of a damaged answer: %s", line)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "precious" {
		t.Errorf("the file a planted %s.part pointed at now holds %q (%v)", file, b, err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("a refused save left %s (%v)", file, err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "victim" && e.Name() != "c.snap.part" {
			t.Errorf("a refused save left %s", e.Name())
		}
	}
}
