package sluice_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/sluicehq/sluice"

// TestDependencyDirection pins the package graph of design.md: pure
// packages stay pure, the spool knows nothing of NATS or zstd, a consumer
// can import wire without bbolt, library packages never import nats-server
// (only embednats, which starts one for embedders, the test helpers, the
// commands and the bench harness do), no package but the test helpers
// imports testing, and nothing imports cmd or bench.
func TestDependencyDirection(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps=false", "-json", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	type pkg struct {
		ImportPath string
		Deps       []string
	}
	pkgs := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")] = p.Deps
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %v", pkgs)
	}
	// serverImporters are the packages that may link a NATS server: the
	// public package that starts one for embedders, the test helpers over
	// it, and the commands, benchmarks and bench harness.
	serverImporters := []string{"embednats", "internal/natstest", "internal/blast", "cmd/", "bench"}
	// allowed says which non-standard imports (module path prefixes) each
	// package may have, directly or not.
	allowed := map[string][]string{
		"internal/jsonx":     {},
		"internal/validated": {},
		"priority":           {module + "/internal/jsonx"},
		"shaper":             {module + "/priority", module + "/internal/jsonx"},
		"spool":              {"go.etcd.io/bbolt", "golang.org/x/sys"},
		"wire":               {"github.com/klauspost/compress", "github.com/nats-io/nats.go", "github.com/nats-io/nkeys", "github.com/nats-io/nuid", "golang.org/x/"},
		// The planning model: the shaper's model and the envelope's costs,
		// nothing of the running node (aggregator, spool, bbolt).
		"plan": {module + "/priority", module + "/shaper", module + "/wire", module + "/internal/jsonx",
			"github.com/klauspost/compress", "github.com/nats-io/nats.go", "github.com/nats-io/nkeys", "github.com/nats-io/nuid", "golang.org/x/"},
	}
	for name, deps := range pkgs {
		for _, d := range deps {
			if (d == "testing" || d == module+"/internal/natstest") && name != "internal/natstest" {
				t.Errorf("%s imports %s: only tests import testing and the test helpers", name, d)
			}
			if !strings.Contains(strings.Split(d, "/")[0], ".") {
				continue // standard library
			}
			if strings.HasPrefix(d, module+"/cmd") || strings.HasPrefix(d, module+"/bench") {
				t.Errorf("%s imports %s: nothing imports cmd or bench", name, d)
			}
			if !hasPrefix(name, serverImporters) && strings.HasPrefix(d, "github.com/nats-io/nats-server") {
				t.Errorf("%s imports %s: library packages never import nats-server (only %v may)", name, d, serverImporters)
			}
			if allow, ok := allowed[name]; ok && !hasPrefix(d, allow) {
				t.Errorf("%s imports %s; it may import only %v and the standard library", name, d, allow)
			}
		}
	}
}

func hasPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// TestProductionBinary pins the test and bench scaffolding out of the
// sluice binary as built by default: it links no testing package, no test
// helpers, and not the bench harness, whose binaries turn into a NATS
// server when an environment variable says so (`sluice bench` is built
// with -tags sluicebench).
func TestProductionBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", module+"/cmd/sluice").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list found only %q", deps)
	}
	for _, d := range deps {
		switch d {
		case "testing", module + "/internal/natstest", module + "/internal/blast":
			t.Errorf("cmd/sluice links %s", d)
		}
	}
}
