package standalone

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// Member routes of /v1:
//
//	GET    /v1/members       {"members":[{"id","raft_addr","peer_addr","leader","alive","voter"}]}
//	                         sorted by id; leader = leads group "default"
//	GET    /v1/members/{id}  one member; 404 not_found
//	PUT    /v1/members/{id}  body {"raft_addr":"host:port","peer_addr":"host:port"};
//	                         id 0 = the next free id -> {"id":N}. The new
//	                         server then starts with --join. Adding a Raft
//	                         address the cluster has returns its id.
//	DELETE /v1/members/{id}  {"id":N}; 404 not_found; the last voter is
//	                         400 invalid

type memberJSON struct {
	ID       uint64 `json:"id"`
	RaftAddr string `json:"raft_addr"`
	PeerAddr string `json:"peer_addr"`
	Leader   bool   `json:"leader"`
	Alive    bool   `json:"alive"`
	Voter    bool   `json:"voter"`
}

type addMemberJSON struct {
	RaftAddr string `json:"raft_addr"`
	PeerAddr string `json:"peer_addr"`
}

func toMemberJSON(m dister.Member) memberJSON {
	return memberJSON{ID: m.ID, RaftAddr: m.RaftAddr, PeerAddr: m.PeerAddr, Leader: m.Leader, Alive: m.Alive, Voter: m.Voter}
}

func memberID(c *gin.Context) (uint64, error) {
	v := c.Param("id")
	id, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, invalidf("member id %q: want an unsigned integer", v)
	}
	return id, nil
}

func (s *Server) listMembers(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	ms, err := s.node.Members(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	out := make([]memberJSON, len(ms))
	for i, m := range ms {
		out[i] = toMemberJSON(m)
	}
	s.reply(c, http.StatusOK, map[string][]memberJSON{"members": out}, noRevision)
}

func (s *Server) getMember(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	id, err := memberID(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	ms, err := s.node.Members(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	for _, m := range ms {
		if m.ID == id {
			s.reply(c, http.StatusOK, toMemberJSON(m), noRevision)
			return
		}
	}
	s.fail(c, fmt.Errorf("server %d: %w", id, dister.ErrNotFound))
}

func (s *Server) addMember(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	id, err := memberID(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	var in addMemberJSON
	if err := readJSON(c, &in); err != nil {
		s.fail(c, err)
		return
	}
	id, err = s.node.AddServer(c.Request.Context(), id, dister.Peer{RaftAddr: in.RaftAddr, PeerAddr: in.PeerAddr})
	if err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, map[string]uint64{"id": id}, noRevision)
}

func (s *Server) removeMember(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	id, err := memberID(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.node.RemoveServer(c.Request.Context(), id); err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, map[string]uint64{"id": id}, noRevision)
}
