package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/natstest"
)

// A release build names itself: the values given with -ldflags come out of
// `sluice version` and `sluice --version` unchanged, with the toolchain.
func TestVersionFromLdflags(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "sluice")
	ld := "-X main.version=v9.8.7 -X main.commit=0123abcd -X main.date=2026-12-07T10:00:00Z"
	if out, err := exec.Command("go", "build", "-ldflags", ld, "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := "sluice v9.8.7 commit 0123abcd built 2026-12-07T10:00:00Z " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(exe, arg).Output()
		if err != nil || string(out) != want {
			t.Errorf("sluice %s = %q, %v; want %q", arg, out, err, want)
		}
	}
}

// Without -ldflags the identity comes from the build information Go
// records: never empty, never a made-up release number.
func TestVersionFromBuildInfo(t *testing.T) {
	b := build()
	if b.Version == "" || b.GoVersion != runtime.Version() {
		t.Fatalf("build() = %+v", b)
	}
	var out strings.Builder
	if err := run(t.Context(), []string{"version"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != b.String()+"\n" || !strings.HasPrefix(got, "sluice "+b.Version) {
		t.Errorf("sluice version = %q, want %q", got, b.String())
	}
	if err := run(t.Context(), []string{"version", "extra"}, io.Discard, io.Discard); err != errUsage {
		t.Errorf("sluice version extra = %v, want errUsage", err)
	}
}

// A running node reports the same identity in its status document and as
// the sluice_build_info metric.
func TestVersionOfARunningNode(t *testing.T) {
	addr, _ := startNode(t, "--upstream", natstest.Start(t).ClientURL(), "--data-dir", t.TempDir())
	b := build()
	res, err := http.Get("http://" + addr + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Version string }
	err = json.NewDecoder(res.Body).Decode(&st)
	res.Body.Close()
	if err != nil || st.Version != b.String() {
		t.Errorf("status version = %q, %v; want %q", st.Version, err, b.String())
	}
	res, err = http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	want := `sluice_build_info{commit="` + b.Commit + `",goversion="` + b.GoVersion + `",version="` + b.Version + `"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %s", want)
	}
}

// The binary warns when the Go that built it is older than go.mod's
// toolchain line, and only then.
func TestToolchainWarning(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), "\ntoolchain "+pinnedToolchain+"\n") {
		t.Fatalf("go.mod's toolchain line is not %s: keep pinnedToolchain equal to it", pinnedToolchain)
	}
	for _, c := range []struct {
		goVersion string
		warn      bool
	}{
		{"go1.26.8", true},
		{"go1.26.9", true},
		{"go1.25.12", true},
		{pinnedToolchain, false},
		{"go1.26.11", false},
		{"go1.27.0", false},
		{"go1.27rc1", false},
		{"devel go1.27-abcdef", false},
	} {
		w := toolchainWarning(c.goVersion)
		if (w != "") != c.warn || (c.warn && !strings.Contains(w, c.goVersion)) {
			t.Errorf("toolchainWarning(%q) = %q, want a warning: %v", c.goVersion, w, c.warn)
		}
	}
}
