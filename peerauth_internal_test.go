package dister

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"strconv"
	"strings"
	"testing"
)

// Every operation the peer package declares (its Op* constants) has a role
// in peerAccess, and peerAccess names nothing else: a new peer operation
// must be given its role on purpose.
func TestPeerAccessCoversEveryOp(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, "internal/peer", func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]bool{}
	for _, p := range pkgs {
		for _, f := range p.Files {
			for _, d := range f.Decls {
				g, ok := d.(*ast.GenDecl)
				if !ok || g.Tok != token.CONST {
					continue
				}
				for _, s := range g.Specs {
					vs := s.(*ast.ValueSpec)
					for i, name := range vs.Names {
						if !strings.HasPrefix(name.Name, "Op") || i >= len(vs.Values) {
							continue
						}
						lit, ok := vs.Values[i].(*ast.BasicLit)
						if !ok {
							continue
						}
						v, _ := strconv.Unquote(lit.Value)
						ops[v] = true
					}
				}
			}
		}
	}
	if len(ops) < 20 {
		t.Fatalf("found only %d peer ops: %v", len(ops), ops)
	}
	for op := range ops {
		if _, ok := peerAccess[op]; !ok {
			t.Errorf("peer op %q has no role in peerAccess", op)
		}
	}
	for op := range peerAccess {
		if !ops[op] {
			t.Errorf("peerAccess names %q, which is no peer op", op)
		}
	}
}
