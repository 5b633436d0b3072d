package standalone

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// auth requires "Authorization: Bearer TOKEN" on every route when
// Options.Token is set, /healthz and /metrics included: the daemon may
// listen beyond loopback only with a token, and then nothing is public
// but the console's static files (/ui), which hold no data: the console
// sends the token with each of its /v1 calls.
func (s *Server) auth(c *gin.Context) {
	if s.opts.Token == "" || isUIPath(c.Request.URL.Path) {
		c.Next()
		return
	}
	scheme, token, ok := strings.Cut(c.GetHeader("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") && tokenEqual(strings.TrimSpace(token), s.opts.Token) {
		c.Next()
		return
	}
	c.Header("WWW-Authenticate", `Bearer realm="dister"`)
	s.failCode(c, http.StatusUnauthorized, codeUnauthorized, "missing or wrong token: send Authorization: Bearer TOKEN")
}

// tokenEqual compares in constant time; hashing first hides the length too.
func tokenEqual(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}
