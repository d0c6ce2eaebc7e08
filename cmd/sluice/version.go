package main

import (
	"fmt"
	goversion "go/version"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Set at release time with
//
//	go build -ldflags "-X main.version=v0.2.0 -X main.commit=$(git rev-parse HEAD) -X main.date=$(date -u +%FT%TZ)"
//
// Left empty, build fills them from the binary's build information:
// the module version (set by `go install module@version`), and the VCS
// revision and time Go stamps into builds from a checkout.
var version, commit, date string

// buildInfo is what `sluice version` prints, /api/v1/status reports and
// sluice_build_info labels.
type buildInfo struct {
	Version   string // v0.2.0, or "devel" for a build from a checkout without -ldflags
	Commit    string // VCS revision; "+dirty" appended when the tree had changes; "" if unknown
	Date      string // build (or commit) time, RFC 3339; "" if unknown
	GoVersion string // the toolchain that built the binary
	Platform  string // GOOS/GOARCH
}

// build returns the binary's identity: -ldflags values first, then the
// build information Go records.
func build() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b.orDevel()
	}
	if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		b.Version = info.Main.Version
	}
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			if b.Commit == "" {
				b.Commit = s.Value
			}
		case "vcs.time":
			if b.Date == "" {
				b.Date = s.Value
			}
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && commit == "" && b.Commit != "" {
		b.Commit += "+dirty"
	}
	return b.orDevel()
}

func (b buildInfo) orDevel() buildInfo {
	if b.Version == "" {
		b.Version = "devel"
	}
	return b
}

// String is the one line `sluice version` prints, and the status
// document's version.
func (b buildInfo) String() string {
	s := "sluice " + b.Version
	if b.Commit != "" {
		s += " commit " + b.Commit
	}
	if b.Date != "" {
		s += " built " + b.Date
	}
	return s + " " + b.GoVersion + " " + b.Platform
}

// collector is the sluice_build_info gauge: 1, its labels the build's
// identity, as Prometheus exporters conventionally report it.
func (b buildInfo) collector() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sluice_build_info",
		Help:        "Always 1; the labels name the running binary's version, commit and Go toolchain.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	if len(args) != 0 {
		fmt.Fprintf(stderr, "sluice version: takes no arguments\n")
		return errUsage
	}
	if w := toolchainWarning(runtime.Version()); w != "" {
		fmt.Fprintln(stderr, "sluice: warning:", w)
	}
	_, err := fmt.Fprintln(stdout, build())
	return err
}

// pinnedToolchain is go.mod's toolchain line (a test keeps them equal):
// the oldest Go whose standard library has the fixes sluice relies on.
// go.mod's go line is older, so a go command that may not switch
// toolchains (GOTOOLCHAIN=local) builds sluice with what it has; the
// binary then says so when it starts and in `sluice version`, and the
// release script refuses to build.
const pinnedToolchain = "go1.26.10"

// toolchainWarning returns why a binary built by Go goVersion lacks the
// pinned toolchain's fixes, or "" when it does not. Development builds of
// Go ("devel …") are taken as new enough.
func toolchainWarning(goVersion string) string {
	if !goversion.IsValid(goVersion) || goversion.Compare(goVersion, pinnedToolchain) >= 0 {
		return ""
	}
	return "built with " + goVersion + ", older than the pinned " + pinnedToolchain +
		": standard-library security fixes are missing; rebuild with GOTOOLCHAIN=" + pinnedToolchain + " (or newer)"
}
