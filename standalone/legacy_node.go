package standalone

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// Default ports of an address given without one: the daemon's defaults.
const (
	legacyRaftPort = 4166
	legacyPeerPort = 4167
)

// legacyNode is v1.5's node object.
type legacyNode struct {
	Name      string `json:"name"`      // "dister-<id>"
	Group     string `json:"group"`     // the group the legacy API maps onto
	ID        uint64 `json:"id"`        // the server id
	IP        string `json:"ip"`        // the Raft address, what POST /node takes
	Status    int    `json:"status"`    // 1 alive, 0 dead
	Role      int    `json:"role"`      // 0 server, 1 client
	Raft      int    `json:"raft"`      // 0 follower, 2 leader (of "default")
	LogID     int64  `json:"logid"`     // "default"'s revision on this server; 0 for the others (unknown here)
	ServiceID int64  `json:"serviceid"` // 0 until services exist
	Version   string `json:"version"`   // this server's dister version; others are assumed to run the same
}

func (s *Server) legacyGetNodes(c *gin.Context) {
	ms, err := s.node.Members(c.Request.Context())
	if err != nil {
		s.legacyError(c, err)
		return
	}
	self := s.node.Status()
	var selfRev int64
	for _, g := range self.Groups {
		if g.Name == "default" {
			selfRev = g.Revision
		}
	}
	nodes := make([]legacyNode, 0, len(ms)+1)
	if self.Role == dister.RoleClient {
		// A client-role daemon lists itself first, as v1.5's client nodes
		// were listed: no id, no Raft address, its cache's revision.
		nodes = append(nodes, legacyNode{Name: "dister-client", Group: "default", Status: 1, Role: 1,
			LogID: selfRev, Version: dister.Version})
	}
	for _, m := range ms {
		n := legacyNode{Name: fmt.Sprintf("dister-%d", m.ID), Group: "default", ID: m.ID, IP: m.RaftAddr,
			Version: dister.Version}
		if m.Alive {
			n.Status = 1
		}
		if m.Leader {
			n.Raft = 2
		}
		if m.ID == self.NodeID {
			n.LogID = selfRev
			nodes = append([]legacyNode{n}, nodes...)
			continue
		}
		nodes = append(nodes, n)
	}
	s.legacyOK(c, nodes, noRevision)
}

// legacyPeer reads "host" (Raft host:4166, peer host:4167) or "host:port"
// (Raft host:port, peer host:port+1).
func legacyPeer(addr string) (dister.Peer, error) {
	addr = strings.TrimSpace(addr)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: a name, an IPv4 address or a bare or bracketed IPv6 one.
		host = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
		if strings.Contains(host, ":") && net.ParseIP(host) == nil {
			return dister.Peer{}, fmt.Errorf("address %q: want host or host:port", addr)
		}
		return legacyPeerAt(addr, host, legacyRaftPort, legacyPeerPort)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || p >= 65535 {
		return dister.Peer{}, fmt.Errorf("address %q: want a port in 1..65534 (the peer port is the next one)", addr)
	}
	return legacyPeerAt(addr, host, int(p), int(p)+1)
}

func legacyPeerAt(addr, host string, raft, peer int) (dister.Peer, error) {
	if host == "" || strings.ContainsAny(host, " /[]") {
		return dister.Peer{}, fmt.Errorf("address %q: want host or host:port", addr)
	}
	return dister.Peer{
		RaftAddr: net.JoinHostPort(host, strconv.Itoa(raft)),
		PeerAddr: net.JoinHostPort(host, strconv.Itoa(peer)),
	}, nil
}

// legacyAddrs reads the body of POST and DELETE /node.
func (s *Server) legacyAddrs(c *gin.Context) ([]dister.Peer, bool) {
	var addrs []string
	if msg, ok := legacyBody(c, &addrs, `a JSON array of addresses, ["host:port",...]`); !ok {
		s.legacyFail(c, msg)
		return nil, false
	}
	peers := make([]dister.Peer, len(addrs))
	for i, a := range addrs {
		p, err := legacyPeer(a)
		if err != nil {
			s.legacyFail(c, msgInvalidType+err.Error())
			return nil, false
		}
		peers[i] = p
	}
	return peers, true
}

// legacyAddNodes adds each server with the next free id, in order; each
// addition is its own write, and adding a known address again is a no-op.
func (s *Server) legacyAddNodes(c *gin.Context) {
	peers, ok := s.legacyAddrs(c)
	if !ok {
		return
	}
	for _, p := range peers {
		if _, err := s.node.AddServer(c.Request.Context(), 0, p); err != nil {
			s.legacyError(c, err)
			return
		}
	}
	s.legacyOK(c, nil, noRevision)
}

// legacyDeleteNodes removes the servers with the given Raft addresses. An
// address no server has is refused before anything is removed.
func (s *Server) legacyDeleteNodes(c *gin.Context) {
	peers, ok := s.legacyAddrs(c)
	if !ok {
		return
	}
	ms, err := s.node.Members(c.Request.Context())
	if err != nil {
		s.legacyError(c, err)
		return
	}
	ids := make([]uint64, len(peers))
	for i, p := range peers {
		for _, m := range ms {
			if m.RaftAddr == p.RaftAddr {
				ids[i] = m.ID
			}
		}
		if ids[i] == 0 {
			s.legacyFail(c, "no server with address "+p.RaftAddr)
			return
		}
	}
	for _, id := range ids {
		if err := s.node.RemoveServer(c.Request.Context(), id); err != nil && !errors.Is(err, dister.ErrNotFound) {
			s.legacyError(c, err)
			return
		}
	}
	s.legacyOK(c, nil, noRevision)
}
