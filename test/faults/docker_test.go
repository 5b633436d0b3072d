package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister/internal/testcluster"
)

// label marks every container, network, volume and image of a run, with
// the pid of the test process as its value, so that a later run removes
// what a killed run left behind (and only that: a live pid is left alone).
const label = "dister.faults.pid"

// docker runs the docker CLI with a bound; it returns trimmed stdout.
func docker(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// dockerUsable tells whether a docker daemon answers.
func dockerUsable() bool {
	if _, err := exec.LookPath("docker"); err != nil {
		return false
	}
	_, err := docker(context.Background(), "info", "--format", "{{.ServerVersion}}")
	return err == nil
}

// sweepStale removes what runs whose process is gone left behind.
func sweepStale(ctx context.Context) {
	for _, kind := range []string{"container", "network", "volume", "image"} {
		list := []string{kind, "ls", "-q", "--filter", "label=" + label}
		format := "{{.ID}} {{.Labels}}"
		switch kind {
		case "container":
			list = []string{"ps", "-a", "--filter", "label=" + label, "--format", format}
		case "image":
			list = []string{"images", "--filter", "label=" + label, "--format", "{{.ID}}"}
		default:
			list = append(list[:2], "--filter", "label="+label, "--format", "{{.Name}} {{.Labels}}")
		}
		out, err := docker(ctx, list...)
		if err != nil || out == "" {
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			id, labels, _ := strings.Cut(line, " ")
			if kind != "image" && pidAlive(labels) {
				continue
			}
			if kind == "image" {
				// Images carry the pid too; ask for it.
				l, err := docker(ctx, "image", "inspect", "--format", "{{index .Config.Labels \""+label+"\"}}", id)
				if err != nil || pidAlive(label+"="+l) {
					continue
				}
			}
			rm := map[string][]string{
				"container": {"rm", "-f", "-v", id}, "network": {"network", "rm", id},
				"volume": {"volume", "rm", "-f", id}, "image": {"rmi", "-f", id},
			}[kind]
			docker(ctx, rm...) //nolint:errcheck // best effort
		}
	}
}

// pidAlive reads label's pid out of a "k=v,k=v" list; true while that
// process lives (or the pid cannot be read: leave it alone then).
func pidAlive(labels string) bool {
	for _, kv := range strings.Split(labels, ",") {
		k, v, _ := strings.Cut(kv, "=")
		if k != label {
			continue
		}
		pid, err := strconv.Atoi(v)
		if err != nil {
			return true
		}
		if pid == os.Getpid() {
			return true
		}
		_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
		return err == nil
	}
	return true
}

// node is one server in its container.
type node struct {
	id      int
	name    string // container name, unique per run
	ip      string // fixed address on the raft network
	rest    string // 127.0.0.1:PORT published to the host
	volume  string
	mu      sync.Mutex
	paused  bool
	cut     bool // disconnected from the raft network
	stopped bool
}

// cluster is a run's servers, networks and volumes.
type cluster struct {
	t      testing.TB
	run    string
	image  string
	front  string // network for the published REST ports
	raft   string // network for Raft and the peer RPC, fixed addresses
	subnet string // of raft, e.g. 10.213.7 (a /24)
	// frontSubnet: servers at .11.., service endpoints at .201..
	frontSubnet string
	token       string
	nodes       []*node
	logDir      string
	labelKV     string
	api         *restClient
	extra       []string // other containers of the run (service endpoints)
}

// buildImage builds the static binary and the repository's Dockerfile into
// an image with a tag of this run; removed by Cleanup.
func buildImage(t testing.TB, run string) string {
	t.Helper()
	ctx := context.Background()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "dister"), "./standalone/cmd/dister")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the static binary: %v\n%s", err, out)
	}
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	tag := "dister-faults:" + run
	if _, err := docker(ctx, "build", "-q", "--label", fmt.Sprintf("%s=%d", label, os.Getpid()), "-t", tag, dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker(context.Background(), "rmi", "-f", tag) }) //nolint:errcheck
	return tag
}

// newRunID is unique per run: names of containers, networks and volumes
// start with it.
func newRunID() string {
	b := make([]byte, 4)
	rand.Read(b) //nolint:errcheck // never fails
	return "dfault-" + hex.EncodeToString(b)
}

// startCluster creates the networks, volumes and n containers and waits
// until every server is ready. Everything is removed by t.Cleanup, on
// failure too; a failing test first saves every container's log.
func startCluster(t testing.TB, image, run string, n int, logDir string) *cluster {
	t.Helper()
	ctx := context.Background()
	// The servers talk over mutual TLS (they listen off loopback, where
	// plaintext is refused): a CA and a certificate per server, made here
	// and mounted read-only. Made before c.remove is registered, so the
	// files outlive the containers.
	certs := t.TempDir()
	c := &cluster{t: t, run: run, image: image, token: "tok-" + run, logDir: logDir,
		labelKV: fmt.Sprintf("%s=%d", label, os.Getpid())}
	c.api = newRESTClient(c.token)
	t.Cleanup(c.remove)
	c.front, c.raft = run+"-front", run+"-raft"
	c.frontSubnet = c.network(t, c.front)
	c.subnet = c.network(t, c.raft)
	var members []string
	for i := 1; i <= n; i++ {
		nd := &node{id: i, name: fmt.Sprintf("%s-n%d", run, i), ip: fmt.Sprintf("%s.%d", c.subnet, 10+i),
			rest: testcluster.FreeAddr(t), volume: fmt.Sprintf("%s-v%d", run, i)}
		c.nodes = append(c.nodes, nd)
		members = append(members, fmt.Sprintf("%d=%s:4166,%s:4167", i, nd.ip, nd.ip))
	}
	ca := testcluster.NewCA(t, certs, "ca")
	for _, nd := range c.nodes {
		ca.IssueFor(t, certs, nd.name, []string{nd.ip}, time.Time{})
	}
	for _, nd := range c.nodes {
		if _, err := docker(ctx, "volume", "create", "--label", c.labelKV, nd.volume); err != nil {
			t.Fatal(err)
		}
		args := []string{"create", "--name", nd.name, "--label", c.labelKV, "--network", c.front,
			"--ip", fmt.Sprintf("%s.%d", c.frontSubnet, 10+nd.id),
			"-p", nd.rest + ":4168", "-v", nd.volume + ":/data", "-v", certs + ":/certs:ro",
			"-e", "DISTER_TLS_CA=/certs/ca.pem", "-e", "DISTER_TLS_CERT=/certs/" + nd.name + ".pem",
			"-e", "DISTER_TLS_KEY=/certs/" + nd.name + "-key.pem",
			"-e", "DISTER_NODE_ID=" + strconv.Itoa(nd.id),
			"-e", "DISTER_RAFT_ADDR=" + nd.ip + ":4166", "-e", "DISTER_PEER_ADDR=" + nd.ip + ":4167",
			"-e", "DISTER_HTTP_ADDR=0.0.0.0:4168", "-e", "DISTER_TOKEN=" + c.token,
			"-e", "DISTER_LOG_LEVEL=warn", "-e", "DISTER_INITIAL_MEMBER=" + strings.Join(members, ";"),
			image, "server"}
		if _, err := docker(ctx, args...); err != nil {
			t.Fatal(err)
		}
		// Every network is attached before the start: the Raft listener
		// binds the fixed address, which must exist then.
		if _, err := docker(ctx, "network", "connect", "--ip", nd.ip, c.raft, nd.name); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range c.nodes {
		if _, err := docker(ctx, "start", nd.name); err != nil {
			t.Fatal(err)
		}
	}
	c.waitReady(t, 2*time.Minute)
	return c
}

// network creates a bridge network on a free /24 of 10.0.0.0/8 (fixed
// addresses need a subnet) and returns its first three octets.
func (c *cluster) network(t testing.TB, name string) string {
	t.Helper()
	var err error
	for range 20 {
		subnet := fmt.Sprintf("10.%d.%d", 100+mrand.IntN(150), mrand.IntN(250))
		_, err = docker(context.Background(), "network", "create", "--label", c.labelKV, "--subnet", subnet+".0/24", name)
		if err == nil {
			return subnet
		}
	}
	t.Fatal(err)
	return ""
}

// remove saves logs when the test failed, then removes the run's
// containers, volumes and networks.
func (c *cluster) remove() {
	ctx := context.Background()
	if c.t.Failed() && c.logDir != "" {
		for _, nd := range c.nodes {
			c.saveLog(ctx, nd)
		}
	}
	for _, nd := range c.nodes {
		docker(ctx, "rm", "-f", "-v", nd.name) //nolint:errcheck
	}
	for _, name := range c.extra {
		docker(ctx, "rm", "-f", "-v", name) //nolint:errcheck
	}
	for _, nd := range c.nodes {
		docker(ctx, "volume", "rm", "-f", nd.volume) //nolint:errcheck
	}
	docker(ctx, "network", "rm", c.raft)  //nolint:errcheck
	docker(ctx, "network", "rm", c.front) //nolint:errcheck
}

func (c *cluster) saveLog(ctx context.Context, nd *node) {
	cmd := exec.CommandContext(ctx, "docker", "logs", "-t", nd.name)
	out, _ := cmd.CombinedOutput()
	path := filepath.Join(c.logDir, nd.name+".log")
	if err := os.WriteFile(path, out, 0o644); err == nil {
		c.t.Logf("log of %s: %s", nd.name, path)
	}
}

// waitReady waits until every server answers /readyz (ready) or fails t.
func (c *cluster) waitReady(t testing.TB, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for _, nd := range c.nodes {
		for !c.api.ready(nd) {
			if time.Now().After(deadline) {
				t.Fatalf("node %d not ready within %v", nd.id, bound)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
