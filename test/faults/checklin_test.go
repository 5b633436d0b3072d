package faults

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// The register model: each key is its own register (Partition), the empty
// value stands for an absent key (a txn compare on value sees a missing
// key as empty, and values written are never empty).

type regInput struct {
	kind       opKind
	key        string
	value, old string
}

type regOutput struct {
	value   string // read
	ok      bool   // cas succeeded
	unknown bool   // write/cas: outcome unknown, may or may not have applied
}

var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, o := range h {
			k := o.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], o)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(regInput), output.(regOutput)
		switch in.kind {
		case opRead:
			return out.value == s, s
		case opWrite:
			return true, in.value
		case opCAS:
			if out.unknown {
				// Placed here, it applied exactly when the compare held; an
				// op that never took effect is placed after everything else.
				if s == in.old {
					return true, in.value
				}
				return true, s
			}
			if out.ok {
				return s == in.old, in.value
			}
			return s != in.old, s
		}
		return false, s
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		switch in.kind {
		case opRead:
			return fmt.Sprintf("get(%s) -> %q", in.key, out.value)
		case opWrite:
			return fmt.Sprintf("put(%s, %q)%s", in.key, in.value, unknownMark(out.unknown))
		default:
			return fmt.Sprintf("cas(%s, %q -> %q) -> %v%s", in.key, in.old, in.value, out.ok, unknownMark(out.unknown))
		}
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

func unknownMark(u bool) string {
	if u {
		return " ?"
	}
	return ""
}

// applied is what a complete watch of the register prefix saw: the
// revision at which each value was written. With it, a write of unknown
// outcome is either known not to have applied (dropped from the history)
// or known to have applied at a revision, which bounds its completion by
// the first answer that reflected that revision.
type applied map[string]int64

// linResult is the linearizability check's account.
type linResult struct {
	ops      int // operations given to porcupine
	unknown  int // of them, unknown outcomes left open
	resolved int // unknown outcomes the watch settled
	keys     int
	took     time.Duration
}

// checkLinearizable runs porcupine over the register ops of h (reads,
// writes, CAS). With seen (nil: the watch was not complete), unknown writes
// are settled first. On a violation it writes porcupine's HTML and the
// history to dir and returns an error naming them.
func checkLinearizable(h []op, seen applied, dir, name string) (linResult, error) {
	var res linResult
	horizon := int64(0)
	for _, o := range h {
		horizon = max(horizon, o.ret)
	}
	// answered[i]: the revision an ok answer proves applied, and when.
	type mark struct{ rev, ret int64 }
	var marks []mark
	for _, o := range h {
		if o.out == outOK && o.kind != opSessionRead {
			r := max(o.rev, o.hdr)
			if r > 0 {
				marks = append(marks, mark{r, o.ret})
			}
		}
	}
	sort.Slice(marks, func(i, j int) bool { return marks[i].rev < marks[j].rev })
	// suffixMin[i] = the earliest return among marks[i:].
	suffixMin := make([]int64, len(marks)+1)
	suffixMin[len(marks)] = math.MaxInt64
	for i := len(marks) - 1; i >= 0; i-- {
		suffixMin[i] = min(suffixMin[i+1], marks[i].ret)
	}
	firstReflecting := func(rev int64) int64 {
		i := sort.Search(len(marks), func(i int) bool { return marks[i].rev >= rev })
		return suffixMin[i]
	}

	var ops []porcupine.Operation
	keys := map[string]bool{}
	for _, o := range h {
		if o.kind == opSessionRead || o.out == outFail {
			continue
		}
		if o.out == outUnknown && o.kind == opRead {
			continue // a read that did not answer says nothing
		}
		in := regInput{kind: o.kind, key: o.key, value: o.value, old: o.old}
		out := regOutput{value: o.value, ok: o.ok}
		ret := o.ret
		if o.out == outUnknown {
			out.unknown, ret = true, horizon+int64(time.Hour)
			if seen != nil {
				rev, ok := seen[o.value]
				if !ok {
					res.resolved++
					continue // it never applied
				}
				res.resolved++
				out.unknown, out.ok = false, true
				if b := firstReflecting(rev); b != math.MaxInt64 && b >= o.call {
					ret = b
				}
			} else {
				res.unknown++
			}
		}
		keys[o.key] = true
		ops = append(ops, porcupine.Operation{ClientId: o.client, Input: in, Output: out, Call: o.call, Return: ret})
	}
	res.ops, res.keys = len(ops), len(keys)
	start := time.Now()
	verdict, info := porcupine.CheckOperationsVerbose(registerModel, ops, 5*time.Minute)
	res.took = time.Since(start)
	switch verdict {
	case porcupine.Ok:
		return res, nil
	case porcupine.Unknown:
		return res, fmt.Errorf("porcupine gave up after %v on %d ops", res.took, len(ops))
	}
	html := filepath.Join(dir, name+"-linearizability.html")
	hist := filepath.Join(dir, name+"-history.txt")
	if f, err := os.Create(html); err == nil {
		porcupine.Visualize(registerModel, info, f) //nolint:errcheck
		f.Close()
	}
	writeHistory(hist, h)
	return res, fmt.Errorf("history not linearizable: see %s and %s", html, hist)
}

func writeHistory(path string, h []op) {
	var b strings.Builder
	for _, o := range h {
		b.WriteString(o.String())
		b.WriteByte('\n')
	}
	os.WriteFile(path, []byte(b.String()), 0o644) //nolint:errcheck
}
