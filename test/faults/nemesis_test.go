package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A fault is injected, held, healed; then the harness waits until every
// server is ready again. Each returns what it did, for the log.
type fault struct {
	name string
	run  func(t testing.TB, c *cluster, rng *rand.Rand) string
}

// hold is how long a fault lasts: 4 s (several election timeouts) in the
// short run; in the long run 2 to 10 s, some past the kept lease's TTL.
func hold(rng *rand.Rand) {
	d := 4 * time.Second
	if *flagRounds != 0 {
		d = 2*time.Second + time.Duration(rng.Int64N(int64(8*time.Second)))
	}
	time.Sleep(d)
}

var faults = []fault{
	{"kill", faultKill},
	{"pause-leader", faultPauseLeader},
	{"partition-leader", faultIsolateLeader},
	{"partition-minority", faultMinority},
	{"rolling-restart", faultRolling},
	{"partition-bridge", faultBridge},
}

// must runs a docker command that has to succeed.
func must(t testing.TB, args ...string) {
	t.Helper()
	if _, err := docker(context.Background(), args...); err != nil {
		t.Fatal(err)
	}
}

// leader is the leader most servers report, or a random server when none
// does (the fault then hits a follower, which is a fault too).
func (c *cluster) leaderNode(rng *rand.Rand) *node {
	votes := map[int]int{}
	for _, nd := range c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if id := c.api.leader(ctx, nd); id > 0 {
			votes[id]++
		}
		cancel()
	}
	best, n := 0, 0
	for id, v := range votes {
		if v > n {
			best, n = id, v
		}
	}
	for _, nd := range c.nodes {
		if nd.id == best {
			return nd
		}
	}
	return c.nodes[rng.IntN(len(c.nodes))]
}

func (c *cluster) kill(t testing.TB, nd *node) {
	must(t, "kill", "-s", "KILL", nd.name)
}

func (c *cluster) start(t testing.TB, nd *node) {
	must(t, "start", nd.name)
}

func (c *cluster) cut(t testing.TB, nd *node) {
	must(t, "network", "disconnect", "-f", c.raft, nd.name)
}

func (c *cluster) reconnect(t testing.TB, nd *node) {
	must(t, "network", "connect", "--ip", nd.ip, c.raft, nd.name)
}

// faultKill kills a server with SIGKILL (the leader half the time) and
// starts it again from the same volume.
func faultKill(t testing.TB, c *cluster, rng *rand.Rand) string {
	nd := c.nodes[rng.IntN(len(c.nodes))]
	if rng.IntN(2) == 0 {
		nd = c.leaderNode(rng)
	}
	c.kill(t, nd)
	hold(rng)
	c.start(t, nd)
	return fmt.Sprintf("kill -9 n%d, start", nd.id)
}

// faultPauseLeader freezes the leader past several election timeouts: it
// wakes up believing it leads.
func faultPauseLeader(t testing.TB, c *cluster, rng *rand.Rand) string {
	nd := c.leaderNode(rng)
	must(t, "pause", nd.name)
	hold(rng)
	must(t, "unpause", nd.name)
	return fmt.Sprintf("pause n%d (leader)", nd.id)
}

// faultIsolateLeader cuts the leader off the Raft network; its REST stays
// reachable, so clients keep asking a server that may think it leads.
func faultIsolateLeader(t testing.TB, c *cluster, rng *rand.Rand) string {
	nd := c.leaderNode(rng)
	c.cut(t, nd)
	hold(rng)
	c.reconnect(t, nd)
	return fmt.Sprintf("isolate n%d (leader)", nd.id)
}

// faultMinority cuts a minority (one of 3, two of 5, the leader among them
// half the time) off the Raft network.
func faultMinority(t testing.TB, c *cluster, rng *rand.Rand) string {
	k := (len(c.nodes) - 1) / 2
	perm := rng.Perm(len(c.nodes))
	var cut []*node
	if rng.IntN(2) == 0 {
		cut = append(cut, c.leaderNode(rng))
	}
	for _, i := range perm {
		if len(cut) == k {
			break
		}
		if len(cut) == 0 || c.nodes[i] != cut[0] {
			cut = append(cut, c.nodes[i])
		}
	}
	desc := "isolate minority"
	for _, nd := range cut {
		c.cut(t, nd)
		desc += fmt.Sprintf(" n%d", nd.id)
	}
	hold(rng)
	for _, nd := range cut {
		c.reconnect(t, nd)
	}
	return desc
}

// faultRolling stops every server in turn gracefully (SIGTERM) and starts
// it again, waiting until it is ready before the next.
func faultRolling(t testing.TB, c *cluster, rng *rand.Rand) string {
	var steps []string
	for _, i := range rng.Perm(len(c.nodes)) {
		nd := c.nodes[i]
		began := time.Now()
		must(t, "stop", "-t", "15", nd.name)
		stopped := time.Since(began)
		c.start(t, nd)
		c.waitReady(t, time.Minute)
		steps = append(steps, fmt.Sprintf("n%d stopped in %v, ready %v later", nd.id,
			stopped.Round(time.Millisecond), (time.Since(began)-stopped).Round(time.Millisecond)))
	}
	return "rolling restart: " + strings.Join(steps, ", ")
}

// restartAll kills every server at once and starts them all from their
// volumes: what was acknowledged must still be there.
func (c *cluster) restartAll(t testing.TB) {
	for _, nd := range c.nodes {
		c.kill(t, nd)
	}
	for _, nd := range c.nodes {
		c.start(t, nd)
	}
	c.waitReady(t, 2*time.Minute)
}

// faultBridge splits the servers into two sides that cannot reach each
// other and one bridge server that reaches both (the leader on a side half
// the time). Disconnecting a network cannot make that shape, so the
// Raft addresses of the other side are dropped by iptables inside each
// container's network namespace (nsenter from the host, as root); the
// fixed addresses and listeners stay as they are.
func faultBridge(t testing.TB, c *cluster, rng *rand.Rand) string {
	perm := rng.Perm(len(c.nodes))
	var order []*node
	if rng.IntN(2) == 0 {
		order = append(order, c.leaderNode(rng))
	}
	for _, i := range perm {
		if len(order) == 0 || c.nodes[i] != order[0] {
			order = append(order, c.nodes[i])
		}
	}
	side := (len(order) - 1) / 2
	a, bridge, b := order[:side], order[side], order[side+1:]
	for _, x := range a {
		for _, y := range b {
			c.drop(t, x, y)
			c.drop(t, y, x)
		}
	}
	hold(rng)
	for _, nd := range append(append([]*node{}, a...), b...) {
		c.nsenter(t, nd, "iptables", "-F", "INPUT")
	}
	return fmt.Sprintf("bridge n%d between %s and %s", bridge.id, ids(a), ids(b))
}

func ids(ns []*node) string {
	var s []string
	for _, nd := range ns {
		s = append(s, fmt.Sprintf("n%d", nd.id))
	}
	return "{" + strings.Join(s, ",") + "}"
}

// drop makes nd ignore every packet from the Raft address of from.
func (c *cluster) drop(t testing.TB, nd, from *node) {
	c.nsenter(t, nd, "iptables", "-I", "INPUT", "-s", from.ip, "-j", "DROP")
}

// nsenter runs a command of the host in nd's network namespace.
func (c *cluster) nsenter(t testing.TB, nd *node, args ...string) {
	t.Helper()
	pid, err := docker(context.Background(), "inspect", "-f", "{{.State.Pid}}", nd.name)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", append([]string{"-t", pid, "-n"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nsenter %v in %s: %v: %s", args, nd.name, err, out)
	}
}

// canBridge: the bridge fault needs nsenter and iptables, and root.
func canBridge() bool {
	for _, p := range []string{"nsenter", "iptables"} {
		if _, err := exec.LookPath(p); err != nil {
			return false
		}
	}
	return os.Geteuid() == 0
}
