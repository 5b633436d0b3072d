package standalone

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// Group routes of /v1:
//
//	GET    /v1/groups         {"groups":["default",...]} (sorted)
//	GET    /v1/groups/{name}  {"name","leader","revision"} as this server
//	                          sees it (0s while it has not started the group)
//	PUT    /v1/groups/{name}  201 {"name"}; 409 conflict if it exists
//	DELETE /v1/groups/{name}  {"name"}; 404 group_not_found; "default" is
//	                          400 invalid
//
// ?group= does not apply here (it only picks the revision header's group).

func (s *Server) listGroups(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	gs, err := s.node.Groups(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	// A token limited to groups sees only its own (access.go).
	gs = slices.DeleteFunc(gs, func(g string) bool { return !visibleGroup(c, g) })
	if gs == nil {
		gs = []string{}
	}
	s.reply(c, http.StatusOK, map[string][]string{"groups": gs}, noRevision)
}

func (s *Server) getGroup(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	name := c.Param("name")
	gs, err := s.node.Groups(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	if !slices.Contains(gs, name) {
		s.fail(c, fmt.Errorf("group %q: %w", name, dister.ErrGroupNotFound))
		return
	}
	out := groupStatusJSON{Name: name}
	for _, g := range s.node.Status().Groups {
		if g.Name == name {
			out.Leader, out.Revision = g.Leader, g.Revision
		}
	}
	s.reply(c, http.StatusOK, out, noRevision)
}

func (s *Server) createGroup(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	name := c.Param("name")
	if err := s.node.CreateGroup(c.Request.Context(), name); err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusCreated, map[string]string{"name": name}, noRevision)
}

func (s *Server) deleteGroup(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	name := c.Param("name")
	if err := s.node.DeleteGroup(c.Request.Context(), name); err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, map[string]string{"name": name}, noRevision)
}
