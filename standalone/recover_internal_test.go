package standalone

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister/internal/testcluster"
)

// A panic in a handler (a bug: no input leads there) is answered with a
// 500 JSON error, in the format of the API the path belongs to.
func TestRecover(t *testing.T) {
	c := testcluster.New(t, 1)
	s := New(c.Node(1), Options{Logger: testcluster.Logger()})
	boom := func(*gin.Context) { panic("boom") }
	s.engine.GET("/v1/boom", boom)
	s.engine.PATCH("/kv", boom)

	// httptest.NewRequest says Host: example.com, which the Host check
	// refuses (DNS rebinding); a local client names an address.
	req := func(method, path string, body string) *http.Request {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Host = "127.0.0.1:4168"
		return r
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req("GET", "/v1/boom", ""))
	if w.Code != http.StatusInternalServerError || w.Header().Get("X-Dister-Revision") == "" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	var e errorBody
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Code != codeInternal {
		t.Fatalf("%s: %v", w.Body, err)
	}

	w = httptest.NewRecorder()
	s.ServeHTTP(w, req("PATCH", "/kv", "{}"))
	if w.Code != http.StatusOK || w.Body.String() != `{"result":0,"message":"internal error","data":null}` {
		t.Fatalf("legacy: %d %s", w.Code, w.Body)
	}
}
