package standalone

import (
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"
)

// auth requires "Authorization: Bearer TOKEN" when the Server has a token
// set (Options.Token, Options.Tokens), and the role and group the route
// needs (access.go). Nothing is public but /healthz, /readyz and the
// console's static files (/ui), which hold no data: the console sends the
// token with each of its /v1 calls.
func (s *Server) auth(c *gin.Context) {
	if !s.authOn() || isUIPath(c.Request.URL.Path) {
		c.Next()
		return
	}
	s.authorize(c)
}

// bearer is the token of "Authorization: Bearer TOKEN" ("" without one).
func bearer(c *gin.Context) string {
	scheme, token, ok := strings.Cut(c.GetHeader("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
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

// checkHost refuses a request whose Host names this daemon by a name it
// was not given: DNS rebinding points a name the attacker controls at
// 127.0.0.1, and the victim's browser then reads the daemon's answers
// as that site's own. An IP literal, "localhost" and the names of
// Options.AllowedHosts pass; a rebinding attack cannot send an IP literal,
// since the page's own name is what the browser puts in Host.
func (s *Server) checkHost(c *gin.Context) {
	if s.hostAllowed(c.Request.Host) {
		c.Next()
		return
	}
	s.failCode(c, http.StatusForbidden, codeCrossSite,
		"refused: Host "+quoteList([]string{hostName(c.Request.Host)})+" is not a name of this daemon (allow it with --allowed-host)")
}

func (s *Server) hostAllowed(hostport string) bool {
	h := hostName(hostport)
	if h == "" || h == "localhost" || net.ParseIP(h) != nil {
		return true
	}
	return slices.Contains(s.allowedHosts, h) || slices.Contains(s.allowedHosts, "*")
}

// hostName is the host of a Host header, lower case, without port,
// brackets or a final dot.
func hostName(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.Trim(h, "[]"), ".")
	return strings.ToLower(h)
}
