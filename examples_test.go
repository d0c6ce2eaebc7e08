package sluice_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestExamplesOutsideModule copies the examples of every public package,
// and the README's Embedding program, into a module of their own, as a
// user's service would hold them, with sluice replaced by this checkout,
// and vets them and runs the examples there: an
// example that imports an internal package, or needs anything of the
// repository but its public API, fails here. It works offline: the
// requirements are this module's, so the module cache has them all.
func TestExamplesOutsideModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the examples in a module of their own")
	}
	repo, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(repo, "*", "example*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	user := t.TempDir()
	var pkgs []string
	for _, f := range files {
		pkg := filepath.Base(filepath.Dir(f))
		if pkg == "cmd" || pkg == "bench" || pkg == "internal" {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(src, []byte("\npackage "+pkg+"_test\n")) && !bytes.HasPrefix(src, []byte("package "+pkg+"_test\n")) {
			t.Errorf("%s: an example of a public package belongs to package %s_test, as a user's code would", f, pkg)
			continue
		}
		os.MkdirAll(filepath.Join(user, pkg), 0o755)
		if err := os.WriteFile(filepath.Join(user, pkg, filepath.Base(f)), src, 0o644); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, pkg)
	}
	// The README's Embedding program, as the service's main package.
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## Embedding\n")
	_, program, ok := strings.Cut(section, "\n```go\n")
	program, _, ok2 := strings.Cut(program, "\n```\n")
	if !ok || !ok2 || !strings.HasPrefix(program, "package main\n") {
		t.Fatal("README.md: no Go program in the Embedding section")
	}
	os.MkdirAll(filepath.Join(user, "service"), 0o755)
	if err := os.WriteFile(filepath.Join(user, "service", "main.go"), []byte(program+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, want := range []string{"aggregator", "ingest", "embednats", "observe", "wire"} {
		if !strings.Contains(" "+strings.Join(pkgs, " ")+" ", " "+want+" ") {
			t.Errorf("no example of %s found among %v", want, pkgs)
		}
	}

	// The user's go.mod: this module's requirements, so nothing new is
	// needed, and sluice from this checkout.
	mod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	reqs := regexp.MustCompile(`(?s)\nrequire \(.*?\n\)\n`).FindAll(mod, -1)
	if len(reqs) == 0 {
		t.Fatal("go.mod: no require block")
	}
	gomod := "module example.com/service\n\ngo 1.26.8\n\nrequire github.com/sluicehq/sluice v0.0.0\n\nreplace github.com/sluicehq/sluice => " + repo + "\n" + string(bytes.Join(reqs, nil))
	if err := os.WriteFile(filepath.Join(user, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(user, "go.sum"), sum, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{
		{"vet", "./..."},
		{"test", "-count=1", "-run", "^Example", "./..."},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = user
		// Offline: everything comes from the module cache and this
		// checkout. -mod=mod lets go add the indirect requirements the
		// user's module lacks, from the cache.
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			if bytes.Contains(out, []byte("module lookup disabled by GOPROXY=off")) {
				t.Skipf("the module cache lacks a requirement and GOPROXY=off forbids fetching it:\n%s", out)
			}
			t.Fatalf("go %s in a module of its own: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("go %s:\n%s", strings.Join(args, " "), out)
	}
}
