package main

import (
	"bytes"
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The README and docs/config.md are checked against the binary: every
// command `sluice help` lists is in the README's command list, every route
// the node's muxes register is in the README, every field of the ingest
// answer is in the README, and every flag either document gives exists on
// the command it names.

// helpCommands returns the commands `sluice help` lists, such as "run" and
// "spool check".
func helpCommands(t *testing.T) []string {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"help"}, &out, &out); err != nil {
		t.Fatalf("sluice help: %v", err)
	}
	_, list, ok := strings.Cut(out.String(), "Usage:\n")
	if !ok {
		t.Fatalf("sluice help has no Usage section:\n%s", out.String())
	}
	var cmds []string
	for line := range strings.Lines(list) {
		rest, ok := strings.CutPrefix(line, "  sluice ")
		if !ok {
			if strings.TrimSpace(line) == "" && len(cmds) > 0 {
				break
			}
			continue
		}
		// The synopsis ends at the first two spaces; the command is its
		// leading lower-case words ("spool check DIR" → "spool check").
		synopsis, _, _ := strings.Cut(rest, "  ")
		var words []string
		for w := range strings.FieldsSeq(synopsis) {
			if !regexp.MustCompile(`^[a-z]+$`).MatchString(w) {
				break
			}
			words = append(words, w)
		}
		if len(words) == 0 {
			t.Fatalf("sluice help: no command in %q", line)
		}
		cmds = append(cmds, strings.Join(words, " "))
	}
	if len(cmds) < 5 {
		t.Fatalf("sluice help lists only %q", cmds)
	}
	return cmds
}

// taggedCommands are commands that only a build with a tag has: `sluice
// bench` (-tags sluicebench), kept out of the production binary. The docs
// give them; their flags are checked in a build that has them and skipped
// in one that has not.
var taggedCommands = []string{"bench"}

// withTagged returns cmds and the tagged commands the build lacks.
func withTagged(cmds []string) []string {
	all := slices.Clone(cmds)
	for _, c := range taggedCommands {
		if !slices.Contains(all, c) {
			all = append(all, c)
		}
	}
	return all
}

// commandFlags returns the flags of `sluice CMD -h`, without dashes.
func commandFlags(t *testing.T, cmd string) map[string]bool {
	t.Helper()
	var out bytes.Buffer
	run(context.Background(), append(strings.Fields(cmd), "-h"), &out, &out)
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = true
	}
	return flags
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docUnit is a piece of a Markdown file in which a flag belongs to the
// command named last before it: a line of a code block or a table, or a
// sentence of prose.
type docUnit struct {
	text string
	code bool // a line of a fenced code block
	line int  // its line; for a sentence, where its paragraph begins
}

func docUnits(doc string) []docUnit {
	var units []docUnit
	var para []string
	paraLine := 0
	flush := func() {
		if len(para) == 0 {
			return
		}
		for s := range strings.SplitSeq(strings.Join(para, " "), ". ") {
			units = append(units, docUnit{text: s, line: paraLine})
		}
		para = nil
	}
	fenced := false
	for i, line := range strings.Split(doc, "\n") {
		switch trimmed := strings.TrimSpace(line); {
		case strings.HasPrefix(trimmed, "```"):
			flush()
			fenced = !fenced
		case fenced:
			units = append(units, docUnit{text: line, code: true, line: i + 1})
		case trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "- "):
			flush()
			if trimmed != "" {
				para, paraLine = []string{trimmed}, i+1
			}
		case strings.HasPrefix(trimmed, "|"):
			flush()
			units = append(units, docUnit{text: line, line: i + 1})
		default:
			if len(para) == 0 {
				paraLine = i + 1
			}
			para = append(para, trimmed)
		}
	}
	flush()
	return units
}

// flagUse is a flag a document gives and the command it gives it to: ""
// when the document names none before it.
type flagUse struct {
	cmd, flag string
	line      int
}

// docFlags finds the --flags of doc: in a code block only those after a
// sluice command on their line (before a comment or another command); in
// prose and tables those in code spans, given to the last command named
// before them in their sentence or row, as `sluice CMD` or a span that
// begins with the command's name (`sink --with-headers`).
func docFlags(doc string, cmds []string) []flagUse {
	byLen := slices.Clone(cmds)
	slices.SortFunc(byLen, func(a, b string) int { return len(b) - len(a) })
	alt := strings.Join(byLen, "|")
	named := regexp.MustCompile(`\bsluice (` + alt + `)\b|` + "`(" + alt + `) --`)
	flag := regexp.MustCompile(`(?:^|[\s\[` + "`" + `(])--([a-z][a-z0-9-]*)`)
	span := regexp.MustCompile("`[^`]+`")
	var uses []flagUse
	for _, u := range docUnits(doc) {
		text := u.text
		if u.code {
			text, _, _ = strings.Cut(text, " #")
		}
		type mark struct {
			at  int
			cmd string
		}
		var marks []mark
		for _, m := range named.FindAllStringSubmatchIndex(text, -1) {
			g := 2 // `sluice CMD`, else `CMD --`
			if m[g] < 0 {
				g = 4
			}
			marks = append(marks, mark{m[0], text[m[g]:m[g+1]]})
		}
		cmdAt := func(at int) string {
			c := ""
			for _, m := range marks {
				if m.at < at {
					c = m.cmd
				}
			}
			return c
		}
		find := func(s string, off int) {
			for _, m := range flag.FindAllStringSubmatchIndex(s, -1) {
				c := cmdAt(off + m[2])
				if u.code && c == "" {
					continue // another program's flag
				}
				uses = append(uses, flagUse{cmd: c, flag: s[m[2]:m[3]], line: u.line})
			}
		}
		if u.code {
			// Stop at a pipe or a second command: its flags are not sluice's.
			end := len(text)
			for _, sep := range []string{" | ", " && ", "; "} {
				if i := strings.Index(text, sep); i >= 0 && i < end {
					end = i
				}
			}
			find(text[:end], 0)
			continue
		}
		for _, m := range span.FindAllStringIndex(text, -1) {
			find(text[m[0]:m[1]], m[0])
		}
	}
	return uses
}

// checkDocFlags checks that each flag of doc exists on its command, or,
// where none is named, on dflt ("" meaning any command).
func checkDocFlags(t *testing.T, name, doc string, cmds []string, dflt string) {
	t.Helper()
	flags := map[string]map[string]bool{}
	for _, c := range cmds {
		flags[c] = commandFlags(t, c)
	}
	uses := docFlags(doc, withTagged(cmds))
	if len(uses) == 0 {
		t.Fatalf("%s: no flag found: is the parser broken?", name)
	}
	for _, u := range uses {
		c := u.cmd
		if c == "" {
			c = dflt
		}
		if c != "" {
			if flags[c] == nil {
				continue // a tagged command this build lacks
			}
			if !flags[c][u.flag] {
				t.Errorf("%s:%d: --%s: `sluice %s -h` has no such flag", name, u.line, u.flag, c)
			}
			continue
		}
		found := false
		for _, f := range flags {
			found = found || f[u.flag]
		}
		if !found {
			t.Errorf("%s:%d: --%s: no command has this flag", name, u.line, u.flag)
		}
	}
}

// TestREADMECommands checks the README's command list against `sluice
// help`, both ways, and the flags it gives each command against the
// command's -h.
func TestREADMECommands(t *testing.T) {
	cmds := helpCommands(t)
	readme := readDoc(t, "README.md")
	_, section, ok := strings.Cut(readme, "\n## Commands\n")
	if !ok {
		t.Fatal("README.md has no Commands section")
	}
	_, block, ok := strings.Cut(section, "```\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("README.md: no code block in the Commands section")
	}
	flags := map[string]map[string]bool{}
	for _, c := range cmds {
		flags[c] = commandFlags(t, c)
	}
	flag := regexp.MustCompile(`--([a-z][a-z0-9-]*)`)
	listed := map[string]bool{}
	cur := "" // the command of this line and its continuation lines
	for line := range strings.Lines(block) {
		rest, ok := strings.CutPrefix(line, "sluice ")
		if !ok {
			for _, m := range flag.FindAllStringSubmatch(line, -1) {
				if f, ok := flags[cur]; ok && !f[m[1]] {
					t.Errorf("README.md Commands: `sluice %s` has no flag --%s", cur, m[1])
				}
			}
			continue
		}
		c := ""
		for _, cmd := range withTagged(cmds) {
			if (rest == cmd || strings.HasPrefix(rest, cmd+" ") || strings.HasPrefix(rest, cmd+"\n")) && len(cmd) > len(c) {
				c = cmd
			}
		}
		if c == "" {
			t.Errorf("README.md lists %q, which `sluice help` does not", strings.TrimSpace(line))
		}
		listed[c], cur = true, c
		for _, m := range flag.FindAllStringSubmatch(rest, -1) {
			if f, ok := flags[c]; ok && !f[m[1]] {
				t.Errorf("README.md Commands: `sluice %s` has no flag --%s", c, m[1])
			}
		}
	}
	for _, c := range cmds {
		if !listed[c] {
			t.Errorf("`sluice help` lists `sluice %s`; the README's Commands section does not", c)
		}
	}
	checkDocFlags(t, "README.md", readme, cmds, "")
}

// TestConfigDocFlags checks that every flag docs/config.md gives exists
// on the command it names, `sluice run` where it names none.
func TestConfigDocFlags(t *testing.T) {
	cmds := helpCommands(t)
	checkDocFlags(t, "docs/config.md", readDoc(t, "docs/config.md"), cmds, "run")
}

// TestDocFlagsParser pins how flags are given to commands.
func TestDocFlagsParser(t *testing.T) {
	cmds := []string{"run", "sink", "spool check"}
	doc := "Ctrl-C stops `sluice run` (up to `--drain-timeout`). `--config` is a file.\n" +
		"`sink --with-headers` keeps headers; `sluice spool check --json` too.\n\n" +
		"| `--listen` | x |\n\n" +
		"```sh\n" +
		"curl --data-binary x\n" +
		"go run ./cmd/sluice sink --upstream u --idle-exit 2s   # not --this\n" +
		"sluice run --node n | grep --color x\n" +
		"```\n"
	got := docFlags(doc, cmds)
	want := []flagUse{
		{"run", "drain-timeout", 1}, {"", "config", 1},
		{"sink", "with-headers", 1}, {"spool check", "json", 1},
		{"", "listen", 4},
		{"sink", "upstream", 8}, {"sink", "idle-exit", 8},
		{"run", "node", 9},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("docFlags:\n got %v\nwant %v", got, want)
	}
}

// route is a pattern registered on one of the node's muxes.
type route struct {
	method, path string
	at           string // file:line
}

// muxRoutes reads the routes the node serves from the source: the
// patterns given to mux.Handle and mux.HandleFunc in this package (the
// ingest listener's nodeMux, the admin listener) and to post and
// mux.Handle in package ingest, whose handler nodeMux serves under "/".
// A pattern may be a literal, a concatenation, or a variable ranging over
// a literal list. Catch-alls ("/", answered with 404 or handed on) are
// left out.
func muxRoutes(t *testing.T) []route {
	t.Helper()
	var routes []route
	for _, dir := range []string{".", filepath.Join("..", "..", "ingest")} {
		fset := token.NewFileSet()
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		var parsed []*ast.File
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			parsed = append(parsed, af)
		}
		vars := map[string]ast.Expr{} // package-level var name → value
		for _, af := range parsed {
			for _, d := range af.Decls {
				if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.VAR {
					for _, sp := range g.Specs {
						vs := sp.(*ast.ValueSpec)
						for i, n := range vs.Names {
							if i < len(vs.Values) {
								vars[n.Name] = vs.Values[i]
							}
						}
					}
				}
			}
		}
		for _, af := range parsed {
			ast.PreorderStack(af, nil, func(n ast.Node, stack []ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) < 2 {
					return true
				}
				switch fn := call.Fun.(type) {
				case *ast.SelectorExpr:
					if x, ok := fn.X.(*ast.Ident); !ok || x.Name != "mux" || (fn.Sel.Name != "Handle" && fn.Sel.Name != "HandleFunc") {
						return true
					}
				case *ast.Ident:
					if dir == "." || fn.Name != "post" {
						return true
					}
				default:
					return true
				}
				at := fset.Position(call.Pos()).String()
				pats, ok := evalStrings(call.Args[0], stack, vars)
				if !ok {
					if isParam(call.Args[0], stack) {
						return true // inside a helper such as post: its calls are read
					}
					t.Fatalf("%s: cannot read the route pattern %s: keep patterns literal or teach muxRoutes", at, types(call.Args[0]))
				}
				for _, p := range pats {
					method, path, ok := strings.Cut(p, " ")
					if !ok {
						method, path = "", p
					}
					if path == "/" {
						continue // a catch-all
					}
					path = strings.TrimSuffix(path, "{$}")
					routes = append(routes, route{method: method, path: path, at: at})
				}
				return true
			})
		}
	}
	if len(routes) < 10 {
		t.Fatalf("found only %d routes: %v", len(routes), routes)
	}
	return routes
}

func types(e ast.Expr) string { return reflect.TypeOf(e).String() }

// evalStrings returns the values a string expression takes: a literal, a
// sum, or a loop variable ranging over a literal list (given in place or
// as a package-level var).
func evalStrings(e ast.Expr, stack []ast.Node, vars map[string]ast.Expr) ([]string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return nil, false
		}
		s, err := strconv.Unquote(e.Value)
		return []string{s}, err == nil
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return nil, false
		}
		xs, ok1 := evalStrings(e.X, stack, vars)
		ys, ok2 := evalStrings(e.Y, stack, vars)
		var out []string
		for _, x := range xs {
			for _, y := range ys {
				out = append(out, x+y)
			}
		}
		return out, ok1 && ok2
	case *ast.Ident:
		for i := len(stack) - 1; i >= 0; i-- {
			r, ok := stack[i].(*ast.RangeStmt)
			if !ok {
				continue
			}
			if v, ok := r.Value.(*ast.Ident); ok && v.Name == e.Name {
				return evalList(r.X, stack, vars)
			}
		}
		return nil, false
	}
	return nil, false
}

func evalList(e ast.Expr, stack []ast.Node, vars map[string]ast.Expr) ([]string, bool) {
	if id, ok := e.(*ast.Ident); ok {
		if e, ok = vars[id.Name]; !ok {
			return nil, false
		}
	}
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil, false
	}
	var out []string
	for _, el := range lit.Elts {
		s, ok := evalStrings(el, stack, vars)
		if !ok {
			return nil, false
		}
		out = append(out, s...)
	}
	return out, true
}

// isParam reports whether e names a parameter of a function literal
// around it.
func isParam(e ast.Expr, stack []ast.Node) bool {
	id, ok := e.(*ast.Ident)
	if !ok {
		return false
	}
	for _, n := range stack {
		if fl, ok := n.(*ast.FuncLit); ok {
			for _, f := range fl.Type.Params.List {
				for _, n := range f.Names {
					if n.Name == id.Name {
						return true
					}
				}
			}
		}
	}
	return false
}

// readmeEndpoints returns the paths the README gives in code spans, with
// the methods it gives each ("" for none), trailing slashes cut.
func readmeEndpoints(readme string) map[string]map[string]bool {
	eps := map[string]map[string]bool{}
	ep := regexp.MustCompile(`^(?:(GET|POST|PUT|DELETE|HEAD) )?(/[-A-Za-z0-9._~/]*)`)
	fenced := false
	for line := range strings.Lines(readme) {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		for _, sp := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(line, -1) {
			m := ep.FindStringSubmatch(sp[1])
			if m == nil {
				continue
			}
			p := trimSlash(m[2])
			if eps[p] == nil {
				eps[p] = map[string]bool{}
			}
			eps[p][m[1]] = true
		}
	}
	return eps
}

func trimSlash(p string) string {
	if len(p) > 1 {
		return strings.TrimSuffix(p, "/")
	}
	return p
}

// TestREADMEEndpoints checks that every route the node serves is in the
// README (with its method, where the route has one), and that every
// endpoint the README's tables give with a method is a route.
func TestREADMEEndpoints(t *testing.T) {
	routes := muxRoutes(t)
	readme := readDoc(t, "README.md")
	eps := readmeEndpoints(readme)
	known := map[string]bool{}
	for _, r := range routes {
		p := trimSlash(r.path)
		known[p] = true
		switch {
		case eps[p] == nil:
			t.Errorf("%s: the node routes %q; the README does not mention `%s`", r.at, strings.TrimSpace(r.method+" "+r.path), r.path)
		case r.method != "" && !eps[p][r.method]:
			t.Errorf("%s: the node routes %s %s; the README never gives it as `%s %s`", r.at, r.method, r.path, r.method, r.path)
		}
	}
	for p, methods := range eps {
		for m := range methods {
			if m != "" && !known[p] {
				t.Errorf("README.md gives `%s %s`; the node routes no such path", m, p)
			}
		}
	}
}

// TestREADMEResponseFields checks that every field of the ingest
// endpoints' JSON answer (ingest's response type) is in the README.
func TestREADMEResponseFields(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join("..", "..", "ingest", "handler.go"), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "response" {
			return true
		}
		for _, fl := range ts.Type.(*ast.StructType).Fields.List {
			if fl.Tag == nil {
				continue
			}
			tag, _ := strconv.Unquote(fl.Tag.Value)
			name, _, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ",")
			if name != "" && name != "-" {
				fields = append(fields, name)
			}
		}
		return false
	})
	if len(fields) < 3 {
		t.Fatalf("ingest's response type has fields %q: did it move?", fields)
	}
	readme := readDoc(t, "README.md")
	for _, f := range fields {
		if !strings.Contains(readme, `"`+f+`"`) {
			t.Errorf("the ingest answer has the field %q; the README does not mention it", f)
		}
	}
}
