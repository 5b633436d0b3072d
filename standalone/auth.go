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

// crossOrigin refuses writes a browser sends on behalf of a page of
// another site (Sec-Fetch-Site, or else Origin against Host). Without a
// token such a "simple" request (POST, text/plain, no preflight) would
// reach /v1/txn or the legacy routes of a loopback daemon from any web
// page its user opens. GET and HEAD, requests without those headers (curl,
// the SDK) and the console's own same-origin calls pass.
func (s *Server) sameSite(c *gin.Context) {
	if err := s.crossOrigin.Check(c.Request); err != nil {
		s.failCode(c, http.StatusForbidden, codeCrossSite, "refused: a cross-site request from a web page may not change the cluster")
		return
	}
	c.Next()
}
