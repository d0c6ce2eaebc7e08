package embedded_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOnlyBinaryImportsServer pins the rule that library packages never
// depend on nats-server (nor on this package): only cmd and tests do.
func TestOnlyBinaryImportsServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`,
		"github.com/sluicehq/sluice/...").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, deps, _ := strings.Cut(line, " ")
		if strings.HasPrefix(pkg, "github.com/sluicehq/sluice/cmd/") ||
			strings.HasPrefix(pkg, "github.com/sluicehq/sluice/internal/embedded") ||
			strings.HasPrefix(pkg, "github.com/sluicehq/sluice/bench") {
			continue
		}
		for _, d := range strings.Fields(deps) {
			if strings.HasPrefix(d, "github.com/nats-io/nats-server") || d == "github.com/sluicehq/sluice/internal/embedded" {
				t.Errorf("%s imports %s", pkg, d)
			}
		}
	}
}
