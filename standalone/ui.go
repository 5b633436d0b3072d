package standalone

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/gin-gonic/gin"
)

// The web console: GET /ui redirects to /ui/, which serves index.html;
// /ui/FILE serves the other files of the ui folder. The files are plain
// HTML, CSS and JavaScript embedded in the binary (no build step, nothing
// fetched from elsewhere), so the console works offline.
//
// The assets need no token (auth lets /ui through): they hold no data.
// Every data call the console makes goes to /v1 with the token typed into
// its login field, kept in the browser's sessionStorage. A strict
// Content-Security-Policy allows scripts, styles and connections to this
// origin only, so a value shown in the console can never run as script.

//go:embed ui
var uiFS embed.FS

// uiAsset is one embedded file, prepared once: its gzip form and an ETag
// so that a reload costs a 304.
type uiAsset struct {
	ctype string
	plain []byte
	gz    []byte
	etag  string
}

// uiCSP: this origin only; no inline script or style, no frames.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// loadUI reads the embedded files. They are part of the binary, so an
// error here is a build defect, not something a user can cause.
func loadUI() map[string]*uiAsset {
	out := map[string]*uiAsset{}
	err := fs.WalkDir(uiFS, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := uiFS.ReadFile(p)
		if err != nil {
			return err
		}
		var gz bytes.Buffer
		w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		_, _ = w.Write(b)
		_ = w.Close()
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		out[strings.TrimPrefix(p, "ui/")] = &uiAsset{
			ctype: ctype, plain: b, gz: gz.Bytes(),
			etag: `"` + hex.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	if err != nil {
		panic("standalone: embedded console files: " + err.Error())
	}
	return out
}

// isUIPath: the console's static files, which need no token.
func isUIPath(p string) bool { return p == "/ui" || strings.HasPrefix(p, "/ui/") }

func (s *Server) uiRedirect(c *gin.Context) {
	c.Redirect(http.StatusMovedPermanently, "/ui/")
}

func (s *Server) uiFile(c *gin.Context) {
	name := strings.TrimPrefix(c.Param("file"), "/")
	if name == "" {
		name = "index.html"
	}
	s.uiOnce.Do(func() { s.ui = loadUI() })
	a, ok := s.ui[name]
	if !ok {
		s.failCode(c, http.StatusNotFound, codeNotFound, "no console file "+c.Request.URL.Path)
		return
	}
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Revalidate every time: a new daemon version serves new files under
	// the same names, and the 304 costs a few hundred bytes.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	h.Set("Vary", "Accept-Encoding")
	if inm := c.GetHeader("If-None-Match"); inm != "" && strings.Contains(inm, a.etag) {
		c.Status(http.StatusNotModified)
		return
	}
	body := a.plain
	if acceptsGzip(c.GetHeader("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	c.Data(http.StatusOK, a.ctype, body)
}

// acceptsGzip: a plain look at Accept-Encoding (browsers send "gzip,
// deflate, br, zstd"); "gzip;q=0" is honoured.
func acceptsGzip(v string) bool {
	for part := range strings.SplitSeq(v, ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") {
			return strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0"
		}
	}
	return false
}
