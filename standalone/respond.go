package standalone

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

const (
	headerRevision    = "X-Dister-Revision"
	headerModRevision = "X-Dister-Mod-Revision"
	// headerCache, on a client-role node's GET of a key: hit or miss.
	headerCache = "X-Dister-Cache"
	contentJSON = "application/json"

	// noRevision: the handler knows no revision; reply looks the selected
	// group's up.
	noRevision = -1
	// revisionLookup bounds that look-up: it is local, but an unknown
	// group sends it to the catalog, which may have no quorum.
	revisionLookup = 250 * time.Millisecond

	keyGroup = "dister.group" // gin context key: the ?group= of a /v1 request
)

// reply writes v as JSON with X-Dister-Revision: rev when the handler has
// one (>= 0), else the selected group's revision on this server.
func (s *Server) reply(c *gin.Context, status int, v any, rev int64) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the package's own types are marshalled; they always encode.
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encoding the answer failed"}}`)
	}
	s.stamp(c, rev)
	c.Data(status, contentJSON, b)
}

// stamp sets X-Dister-Revision.
func (s *Server) stamp(c *gin.Context, rev int64) {
	if rev < 0 {
		var ok bool
		if rev, ok = s.localRevision(c); !ok {
			return
		}
	}
	c.Header(headerRevision, strconv.FormatInt(rev, 10))
}

// localRevision is the selected group's revision as this server applied
// it; false when it cannot be read (unknown group, closed Node).
func (s *Server) localRevision(c *gin.Context) (int64, bool) {
	// The request's ctx may be the one that just expired.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), revisionLookup)
	defer cancel()
	rev, err := s.node.Group(c.GetString(keyGroup)).KV().Revision(ctx, dister.Stale())
	return rev, err == nil
}

// selectGroup records ?group= for the handlers and for stamp. Requests
// refused before it (auth, a bad ?timeout) are stamped with "default".
func (s *Server) selectGroup(c *gin.Context) {
	c.Set(keyGroup, c.Query("group"))
	c.Next()
}

// kv is the KV of the selected group.
func (s *Server) kv(c *gin.Context) *dister.KV {
	return s.node.Group(c.GetString(keyGroup)).KV()
}
