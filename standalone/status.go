package standalone

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// healthz: the process is up and serving HTTP, nothing more.
func (s *Server) healthz(c *gin.Context) {
	s.reply(c, http.StatusOK, map[string]string{"status": "ok"}, noRevision)
}

// readyz: 200 {"status":"ready"} once every group this server hosts has a
// leader; 503 no_quorum (closed after Close) if not within
// Options.ReadyTimeout or ?timeout=.
func (s *Server) readyz(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	if _, ok := c.GetQuery("timeout"); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.ReadyTimeout)
		defer cancel()
	}
	if err := s.node.WaitReady(ctx); err != nil {
		code := codeNoQuorum
		if errors.Is(err, dister.ErrClosed) {
			code = codeClosed
		}
		s.failCode(c, http.StatusServiceUnavailable, code, fmt.Sprintf("not ready: %v", err))
		return
	}
	s.reply(c, http.StatusOK, map[string]string{"status": "ready"}, noRevision)
}

type statusJSON struct {
	NodeID  uint64            `json:"node_id"`
	Role    string            `json:"role"`
	Version string            `json:"version"`
	Groups  []groupStatusJSON `json:"groups"`
}

type groupStatusJSON struct {
	Name     string `json:"name"`
	Leader   uint64 `json:"leader"`   // 0 = none known
	Revision int64  `json:"revision"` // applied on this server
}

// status: GET /v1/status, this server's own view, without a network round
// trip (so it answers without a quorum too).
func (s *Server) status(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	st := s.node.Status()
	out := statusJSON{NodeID: st.NodeID, Role: roleName(st.Role), Version: st.Version, Groups: []groupStatusJSON{}}
	for _, g := range st.Groups {
		out.Groups = append(out.Groups, groupStatusJSON{Name: g.Name, Leader: g.Leader, Revision: g.Revision})
	}
	s.reply(c, http.StatusOK, out, noRevision)
}

func roleName(r dister.Role) string { return r.String() }
