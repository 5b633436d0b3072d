package standalone

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// Cluster settings (dister.Settings), the same whatever ?group= says:
//
//	GET /v1/settings   {"script_checks":false}
//	PUT /v1/settings   body {"script_checks":true} -> the settings now in force
//
// script_checks allows script and custom health checks, which run a
// command on the group leader; off by default. A PUT replaces all
// settings, so it must give every field (400 invalid otherwise).

type settingsJSON struct {
	ScriptChecks bool `json:"script_checks"`
}

// settingsInJSON is the body of a PUT: fields are required.
type settingsInJSON struct {
	ScriptChecks *bool `json:"script_checks"`
}

func (s *Server) getSettings(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	st, err := s.node.Settings(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, settingsJSON{ScriptChecks: st.ScriptChecks}, noRevision)
}

func (s *Server) putSettings(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	var in settingsInJSON
	if err := readJSON(c, &in); err != nil {
		s.fail(c, err)
		return
	}
	if in.ScriptChecks == nil {
		s.fail(c, invalidf("settings: script_checks is missing"))
		return
	}
	if err := s.node.SetSettings(c.Request.Context(), dister.Settings{ScriptChecks: *in.ScriptChecks}); err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, settingsJSON{ScriptChecks: *in.ScriptChecks}, noRevision)
}
