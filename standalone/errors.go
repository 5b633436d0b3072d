package standalone

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// Error codes of /v1, as docs/rest.md#errors lists them, with "internal" (500)
// for what no sentinel explains, which would be a bug since every SDK error
// matches a sentinel. A wrong method is 405 with code "invalid".
const (
	codeInvalid       = "invalid"         // 400: malformed input, ErrInvalid
	codeUnauthorized  = "unauthorized"    // 401: missing or wrong token
	codeCrossSite     = "cross_site"      // 403: a browser write sent by a page of another site, or a Host not allowed
	codeForbidden     = "forbidden"       // 403: ErrForbidden, a token without the role or group
	codeNotFound      = "not_found"       // 404: ErrNotFound, unknown route
	codeGroupNotFound = "group_not_found" // 404: ErrGroupNotFound
	codeLeaseNotFound = "lease_not_found" // 404: ErrLeaseNotFound
	codeConflict      = "conflict"        // 409: ErrConflict
	codeCompacted     = "compacted"       // 410: ErrCompacted
	codeTooLarge      = "too_large"       // 413: ErrTooLarge, body over the limit
	codeNoQuorum      = "no_quorum"       // 503: ErrNoQuorum
	codeNoInstance    = "no_instance"     // 503: ErrNoInstance
	codeClosed        = "closed"          // 503: ErrClosed
	codeWatchOverflow = "watch_overflow"  // 503: ErrWatchOverflow, only in a watch stream's error event
	codeStaleView     = "stale_view"      // 503: ErrStaleView
	codeTimeout       = "timeout"         // 504: deadline exceeded, ErrUnknownOutcome
	codeInternal      = "internal"        // 500
)

// errorBody is every /v1 error: {"error":{"code":"...","message":"..."}}.
type errorBody struct {
	Error apiError `json:"error"`
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// CompactRevision comes with "compacted": the lowest revision a watch
	// can start from.
	CompactRevision int64 `json:"compact_revision,omitempty"`
}

// classify maps an error to its HTTP status and code. ErrUnknownOutcome
// comes first: a write that may have been applied must never read as one
// that was not (503 no_quorum invites a blind retry). ErrNoQuorum comes
// before the context errors: a call that ran out of time because no
// majority answered matches both, and the cause is what a client acts on.
// ErrGroupNotFound comes before ErrInvalid: a malformed group name is
// reported as an unknown group.
func classify(err error) (int, string) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, dister.ErrUnknownOutcome):
		return http.StatusGatewayTimeout, codeTimeout
	case errors.Is(err, dister.ErrNoQuorum):
		return http.StatusServiceUnavailable, codeNoQuorum
	case errors.Is(err, dister.ErrClosed):
		return http.StatusServiceUnavailable, codeClosed
	case errors.Is(err, dister.ErrGroupNotFound):
		return http.StatusNotFound, codeGroupNotFound
	case errors.Is(err, dister.ErrLeaseNotFound):
		return http.StatusNotFound, codeLeaseNotFound
	case errors.Is(err, dister.ErrNotFound):
		return http.StatusNotFound, codeNotFound
	case errors.Is(err, dister.ErrConflict):
		return http.StatusConflict, codeConflict
	case errors.Is(err, dister.ErrCompacted):
		return http.StatusGone, codeCompacted
	case errors.Is(err, dister.ErrTooLarge), errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, codeTooLarge
	case errors.Is(err, dister.ErrNoInstance):
		return http.StatusServiceUnavailable, codeNoInstance
	case errors.Is(err, dister.ErrStaleView):
		return http.StatusServiceUnavailable, codeStaleView
	case errors.Is(err, dister.ErrWatchOverflow):
		return http.StatusServiceUnavailable, codeWatchOverflow
	case errors.Is(err, dister.ErrInvalid):
		return http.StatusBadRequest, codeInvalid
	case errors.Is(err, dister.ErrForbidden):
		return http.StatusForbidden, codeForbidden
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// Canceled: the client went away or the server is shutting down;
		// nobody reads the answer, but it must not count as a bug.
		return http.StatusGatewayTimeout, codeTimeout
	default:
		return http.StatusInternalServerError, codeInternal
	}
}

// invalidf is an input error of the request itself (400 invalid).
func invalidf(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, dister.ErrInvalid)...)
}

// bodyError turns a failed body read into too_large when the limit was
// hit, invalid otherwise.
func bodyError(err error) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return fmt.Errorf("request body over %d bytes: %w", tooBig.Limit, dister.ErrTooLarge)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) { // the request's deadline (see deadline)
		return fmt.Errorf("reading the request body: %w", context.DeadlineExceeded)
	}
	return invalidf("reading the request body: %v", err)
}

// fail answers err as a /v1 error and stops the handler chain.
func (s *Server) fail(c *gin.Context, err error) {
	status, code := classify(err)
	s.failCode(c, status, code, err.Error())
	if status >= 500 {
		s.opts.Logger.Warn("request failed", "method", c.Request.Method, "path", c.Request.URL.Path,
			"status", status, "err", err)
	} else {
		s.opts.Logger.Debug("request refused", "method", c.Request.Method, "path", c.Request.URL.Path,
			"status", status, "err", err)
	}
}

func (s *Server) failCode(c *gin.Context, status int, code, message string) {
	s.reply(c, status, errorBody{apiError{Code: code, Message: message}}, noRevision)
	c.Abort()
}

// noRoute answers an unknown path with a /v1 error.
func (s *Server) noRoute(c *gin.Context) {
	s.failCode(c, http.StatusNotFound, codeNotFound, "no route "+c.Request.URL.Path)
}

// noMethod answers in the format of the API the path belongs to: the
// legacy envelope (always HTTP 200) or a /v1 error.
func (s *Server) noMethod(c *gin.Context) {
	if isLegacyPath(c.Request.URL.Path) {
		s.legacyFail(c, "method not allowed: "+c.Request.Method)
		return
	}
	// 405 with the code of malformed input: the table's codes are all a
	// client needs to switch on, and Allow names the methods that work.
	s.failCode(c, http.StatusMethodNotAllowed, codeInvalid,
		fmt.Sprintf("method %s not allowed on %s", c.Request.Method, c.Request.URL.Path))
}
