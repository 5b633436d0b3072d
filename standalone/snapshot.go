package standalone

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// GET /v1/snapshot streams one consistent snapshot of the whole cluster
// (dister.Node.Snapshot): the body is the snapshot file itself, read by
// "dister snapshot save" or saved with curl -o. It needs the daemon's
// token when one is set (the admin token: a snapshot holds every group's
// data). Options.RequestTimeout does not apply; the snapshot ends when the
// client goes away.
//
// An error before the first byte is the usual JSON error answer; one after
// it (the status is sent by then) aborts the connection, so the client
// sees a body cut short, which a restore refuses (the SHA-256 is at the
// end). The X-Dister-Snapshot-Format header names the format version.
func (s *Server) snapshot(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	sw := &snapshotWriter{c: c}
	if _, err := s.node.Snapshot(c.Request.Context(), sw); err != nil {
		if !sw.started {
			s.fail(c, err)
			return
		}
		s.opts.Logger.Warn("snapshot stream aborted", "err", err)
		panic(http.ErrAbortHandler) // the recovery middleware lets it through
	}
}

// snapshotWriter sends the response header with the first bytes.
type snapshotWriter struct {
	c       *gin.Context
	started bool
}

func (w *snapshotWriter) Write(p []byte) (int, error) {
	if !w.started {
		w.started = true
		h := w.c.Writer.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", `attachment; filename="dister-`+time.Now().UTC().Format("20060102T150405Z")+`.snap"`)
		h.Set("X-Dister-Snapshot-Format", strconv.Itoa(dister.SnapshotFormat))
		w.c.Writer.WriteHeader(http.StatusOK)
	}
	return w.c.Writer.Write(p)
}
