package sluice_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestIngestValidClosedToOtherModules: Node.IngestValid, which stores
// events without validating them, cannot be called from a user's module.
// Its events argument is an internal type: the module can neither import
// it nor pass a look-alike (a struct of the same shape, a plain slice).
// Each attempt must fail to compile with the error named beside it.
func TestIngestValidClosedToOtherModules(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module of its own")
	}
	repo, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	attempts := map[string]struct{ src, want string }{
		"importer": {`package importer

import "github.com/sluicehq/sluice/internal/validated"

var _ = validated.Vouch(nil)
`, "use of internal package"},
		"lookalike": {`package lookalike

import (
	"context"

	"github.com/sluicehq/sluice/aggregator"
)

func F(n *aggregator.Node) error {
	return n.IngestValid(context.Background(), "c", struct{ bodies [][]byte }{[][]byte{[]byte("x")}})
}
`, "cannot use struct{bodies [][]byte}"},
		"slice": {`package slice

import (
	"context"

	"github.com/sluicehq/sluice/aggregator"
)

func F(n *aggregator.Node) error {
	return n.IngestValid(context.Background(), "c", [][]byte{[]byte("x")})
}
`, "cannot use [][]byte"},
	}
	user := t.TempDir()
	for name, a := range attempts {
		os.MkdirAll(filepath.Join(user, name), 0o755)
		if err := os.WriteFile(filepath.Join(user, name, name+".go"), []byte(a.src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	reqs := regexp.MustCompile(`(?s)\nrequire \(.*?\n\)\n`).FindAll(mod, -1)
	gomod := "module example.com/service\n\ngo 1.26.8\n\nrequire github.com/sluicehq/sluice v0.0.0\n\nreplace github.com/sluicehq/sluice => " + repo + "\n"
	for _, r := range reqs {
		gomod += string(r)
	}
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(user, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(user, "go.sum"), sum, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, a := range attempts {
		cmd := exec.Command("go", "build", "./"+name)
		cmd.Dir = user
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s: a user's module compiled a call past the node's validation", name)
			continue
		}
		if strings.Contains(string(out), "module lookup disabled by GOPROXY=off") {
			t.Skipf("the module cache lacks a requirement and GOPROXY=off forbids fetching it:\n%s", out)
		}
		if !strings.Contains(string(out), a.want) {
			t.Errorf("%s: failed, but not with %q:\n%s", name, a.want, out)
		}
	}
}
