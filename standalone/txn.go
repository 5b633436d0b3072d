package standalone

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// POST /v1/txn runs an atomic transaction (dister.KV.Txn):
//
//	{"if":   [{"key":"k","target":"value|version|mod_revision|create_revision",
//	           "op":"=|!=|<|>","value":"v" | "value_base64":"..." | "number":N}],
//	 "then": [{"op":"put|delete|delete_prefix","key":"k","value":"v" | "value_base64":"..."}],
//	 "else": [...]}
//
// A compare on "value" takes value or value_base64 (neither = the empty
// value); the other targets take number (absent = 0). A missing key has
// version, mod_revision and create_revision 0 and an empty value. Only put
// takes a value. If every compare holds, "then" runs, otherwise "else";
// all in one revision. The answer is
//
//	{"succeeded":bool,"revision":N,"deleted":[K,...]}
//
// with deleted giving, per op of the branch that ran, the keys it removed
// (0 for a put). Unknown fields, bad enums, a value given twice or a field
// that does not fit the target or op are 400 invalid; more than
// dister.MaxTxnOps compares and ops in all is 413 too_large; a compare
// that fails is not an error (succeeded is false).

type txnJSON struct {
	If   []compareJSON `json:"if"`
	Then []opJSON      `json:"then"`
	Else []opJSON      `json:"else"`
}

type compareJSON struct {
	Key         string  `json:"key"`
	Target      string  `json:"target"`
	Op          string  `json:"op"`
	Value       *string `json:"value"`
	ValueBase64 *string `json:"value_base64"`
	Number      *int64  `json:"number"`
}

type opJSON struct {
	Op          string  `json:"op"`
	Key         string  `json:"key"`
	Value       *string `json:"value"`
	ValueBase64 *string `json:"value_base64"`
}

type txnResultJSON struct {
	Succeeded bool    `json:"succeeded"`
	Revision  int64   `json:"revision"`
	Deleted   []int64 `json:"deleted"`
}

var compareTargets = map[string]dister.CompareTarget{
	"value":           dister.CompareValue,
	"version":         dister.CompareVersion,
	"mod_revision":    dister.CompareModRevision,
	"create_revision": dister.CompareCreateRevision,
}

var compareOps = map[string]dister.CompareOp{
	"=": dister.Equal, "!=": dister.NotEqual, "<": dister.Less, ">": dister.Greater,
}

var opTypes = map[string]dister.OpType{
	"put": dister.OpPut, "delete": dister.OpDelete, "delete_prefix": dister.OpDeletePrefix,
}

func (s *Server) txn(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	var in txnJSON
	if err := readJSON(c, &in); err != nil {
		s.fail(c, err)
		return
	}
	t, err := in.toTxn()
	if err != nil {
		s.fail(c, err)
		return
	}
	r, err := s.kv(c).Txn(c.Request.Context(), t)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := txnResultJSON{Succeeded: r.Succeeded, Revision: r.Revision, Deleted: r.Deleted}
	if out.Deleted == nil {
		out.Deleted = []int64{}
	}
	s.reply(c, http.StatusOK, out, r.Revision)
}

// readJSON reads the request body (bounded by the body-limit middleware)
// and decodes it strictly into v.
func readJSON(c *gin.Context, v any) error {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		return bodyError(err)
	}
	return decodeStrict(body, v)
}

// decodeStrict decodes one JSON value with no unknown fields and nothing
// after it.
func decodeStrict(body []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return invalidf("JSON body: %v", err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return invalidf("JSON body: data after the first value")
	}
	return nil
}

func (in *txnJSON) toTxn() (dister.Txn, error) {
	var t dister.Txn
	for i, cj := range in.If {
		cmp, err := cj.toCompare()
		if err != nil {
			return t, invalidf("if[%d]: %v", i, err)
		}
		t.If = append(t.If, cmp)
	}
	var err error
	if t.Then, err = toOps("then", in.Then); err != nil {
		return t, err
	}
	if t.Else, err = toOps("else", in.Else); err != nil {
		return t, err
	}
	return t, nil
}

func (cj compareJSON) toCompare() (dister.Compare, error) {
	target, ok := compareTargets[cj.Target]
	if !ok {
		return dister.Compare{}, errors.New(`target: want value, version, mod_revision or create_revision`)
	}
	op, ok := compareOps[cj.Op]
	if !ok {
		return dister.Compare{}, errors.New(`op: want =, !=, < or >`)
	}
	cmp := dister.Compare{Key: cj.Key, Target: target, Op: op}
	if target == dister.CompareValue {
		if cj.Number != nil {
			return cmp, errors.New(`number is for version and revisions; compare a value with "value"`)
		}
		v, err := valueOf(cj.Value, cj.ValueBase64)
		if err != nil {
			return cmp, err
		}
		cmp.Value = v
		return cmp, nil
	}
	if cj.Value != nil || cj.ValueBase64 != nil {
		return cmp, errors.New(`value is for target "value"; compare ` + cj.Target + ` with "number"`)
	}
	if cj.Number != nil {
		cmp.Number = *cj.Number
	}
	return cmp, nil
}

func toOps(branch string, in []opJSON) ([]dister.Op, error) {
	var out []dister.Op
	for i, oj := range in {
		typ, ok := opTypes[oj.Op]
		if !ok {
			return nil, invalidf("%s[%d]: op: want put, delete or delete_prefix", branch, i)
		}
		op := dister.Op{Type: typ, Key: oj.Key}
		if typ == dister.OpPut {
			v, err := valueOf(oj.Value, oj.ValueBase64)
			if err != nil {
				return nil, invalidf("%s[%d]: %v", branch, i, err)
			}
			op.Value = v
		} else if oj.Value != nil || oj.ValueBase64 != nil {
			return nil, invalidf("%s[%d]: only put takes a value", branch, i)
		}
		out = append(out, op)
	}
	return out, nil
}

// valueOf reads a value given as text or as base64 (at most one of them).
func valueOf(text, b64 *string) ([]byte, error) {
	switch {
	case text != nil && b64 != nil:
		return nil, errors.New("value and value_base64 exclude each other")
	case b64 != nil:
		v, err := base64.StdEncoding.DecodeString(*b64)
		if err != nil {
			return nil, errors.New("value_base64: not standard base64")
		}
		return v, nil
	case text != nil:
		return []byte(*text), nil
	}
	return nil, nil
}
