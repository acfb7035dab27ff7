package workflows

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// maxFuncLines is the most lines a function of the workflows may span: a
// workflow reads as named steps, each short enough to hold in mind.
const maxFuncLines = 60

// TestNoWorkflowFunctionOverSixtyLines parses every non-test file of the
// package and fails on any function (or method) longer than maxFuncLines.
func TestNoWorkflowFunctionOverSixtyLines(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			key := name + ":" + fn.Name.Name
			if fn.Recv != nil && len(fn.Recv.List) > 0 {
				key = name + ":" + recvName(fn.Recv.List[0].Type) + "." + fn.Name.Name
			}
			lines := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
			if lines > maxFuncLines {
				t.Errorf("%s is %d lines, more than %d: split it into named steps", key, lines, maxFuncLines)
			}
		}
	}
}

func recvName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return recvName(x.X)
	case *ast.Ident:
		return x.Name
	case *ast.IndexExpr:
		return recvName(x.X)
	}
	return "?"
}
