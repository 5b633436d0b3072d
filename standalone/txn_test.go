package standalone_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/standalone"
)

func TestTxn(t *testing.T) {
	_, srv := one(t, standalone.Options{})
	rev := revision(t, call(t, srv, "PUT", "/v1/kv/cfg/a", "1"))
	expect(t, call(t, srv, "PUT", "/v1/kv/cfg/b", "2"), 200, "")
	expect(t, call(t, srv, "PUT", "/v1/kv/cfg/c", "3"), 200, "")

	// Every target and op, all true: then runs.
	bin := base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe})
	r := call(t, srv, "POST", "/v1/txn", fmt.Sprintf(`{
		"if": [
			{"key":"cfg/a","target":"value","op":"=","value":"1"},
			{"key":"cfg/a","target":"value","op":"!=","value_base64":"Mg=="},
			{"key":"cfg/a","target":"version","op":"=","number":1},
			{"key":"cfg/a","target":"mod_revision","op":"=","number":%d},
			{"key":"cfg/a","target":"create_revision","op":">","number":0},
			{"key":"cfg/missing","target":"version","op":"<","number":1},
			{"key":"cfg/missing","target":"create_revision","op":"="}
		],
		"then": [
			{"op":"put","key":"cfg/a","value":"one"},
			{"op":"put","key":"cfg/bin","value_base64":%q},
			{"op":"delete","key":"cfg/b"},
			{"op":"delete_prefix","key":"cfg/c"},
			{"op":"put","key":"cfg/empty"}
		],
		"else": [{"op":"put","key":"cfg/else","value":"x"}]
	}`, rev, bin))
	expect(t, r, 200, "")
	trev := revision(t, r)
	jsonEqual(t, r.body, fmt.Sprintf(`{"succeeded":true,"revision":%d,"deleted":[0,0,1,1,0]}`, trev))
	r = call(t, srv, "GET", "/v1/kv?prefix=cfg/", nil)
	jsonEqual(t, r.body, fmt.Sprintf(`{"revision":%[1]d,"more":false,"entries":[
		{"key":"cfg/a","value":"one","create_revision":%[2]d,"mod_revision":%[1]d,"version":2,"lease":0},
		{"key":"cfg/bin","value_base64":%[3]q,"create_revision":%[1]d,"mod_revision":%[1]d,"version":1,"lease":0},
		{"key":"cfg/empty","value":"","create_revision":%[1]d,"mod_revision":%[1]d,"version":1,"lease":0}]}`, trev, rev, bin))

	// A compare that fails: else runs, which is not an error.
	r = call(t, srv, "POST", "/v1/txn", `{"if":[{"key":"cfg/a","target":"value","op":"=","value":"1"}],
		"then":[{"op":"delete","key":"cfg/a"}],"else":[{"op":"put","key":"cfg/else","value":"x"},{"op":"delete","key":"cfg/empty"}]}`)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, fmt.Sprintf(`{"succeeded":false,"revision":%d,"deleted":[0,1]}`, revision(t, r)))

	// An empty branch still answers a revision; deleted is [] not null.
	r = call(t, srv, "POST", "/v1/txn", `{"if":[{"key":"cfg/a","target":"version","op":">","number":100}]}`)
	expect(t, r, 200, "")
	jsonEqual(t, r.body, fmt.Sprintf(`{"succeeded":false,"revision":%d,"deleted":[]}`, revision(t, r)))
}

func TestTxnInvalid(t *testing.T) {
	_, srv := one(t, standalone.Options{MaxBodyBytes: 64 << 10})
	for _, body := range []string{
		``,
		`null x`,
		`[]`,
		`{"then":[]} {}`,
		`{"then":[{"op":"put","key":"k","value":"v"}],"extra":1}`,
		`{"then":[{"op":"upsert","key":"k"}]}`,
		`{"then":[{"op":"put","key":"k","value":"v","lease":1}]}`,
		`{"then":[{"op":"put","key":"k","value":"v","value_base64":"dg=="}]}`,
		`{"then":[{"op":"put","key":"k","value_base64":"not base64!"}]}`,
		`{"then":[{"op":"delete","key":"k","value":"v"}]}`,
		`{"else":[{"op":"PUT","key":"k"}]}`,
		`{"if":[{"key":"k","target":"size","op":"=","number":1}]}`,
		`{"if":[{"key":"k","target":"version","op":"==","number":1}]}`,
		`{"if":[{"key":"k","target":"version","op":"=","value":"1"}]}`,
		`{"if":[{"key":"k","target":"value","op":"=","number":1}]}`,
		`{"if":[{"key":"k","target":"version","op":"=","number":"1"}]}`,
		`{"if":[{"key":"k","target":"version","op":"=","number":1.5}]}`,
		`{"then":[{"op":"put","key":"","value":"v"}]}`,
		`{"then":[{"op":"put","key":"a\u0000b","value":"v"}]}`,
	} {
		r := call(t, srv, "POST", "/v1/txn", body)
		expect(t, r, 400, "invalid")
	}
	expect(t, call(t, srv, "POST", "/v1/txn?consistency=stale", `{}`), 400, "invalid")
	expect(t, call(t, srv, "GET", "/v1/txn", nil), 405, "invalid")

	// Too many ops for one transaction, and a body over the limit.
	ops := make([]string, dister.MaxTxnOps+1)
	for i := range ops {
		ops[i] = fmt.Sprintf(`{"op":"put","key":"k%d","value":"v"}`, i)
	}
	expect(t, call(t, srv, "POST", "/v1/txn", `{"then":[`+strings.Join(ops, ",")+`]}`), 413, "too_large")
	big := fmt.Sprintf(`{"then":[{"op":"put","key":"k","value":%q}]}`, strings.Repeat("v", 64<<10))
	expect(t, call(t, srv, "POST", "/v1/txn", big), 413, "too_large")
}
