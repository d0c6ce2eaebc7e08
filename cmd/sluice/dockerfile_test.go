package main

import (
	"encoding/json"
	"flag"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/natstest"
)

const dockerfile = "../../Dockerfile"

// dockerInstr is one Dockerfile instruction: its keyword, upper-cased, and
// the rest of its line with continuations joined.
type dockerInstr struct{ cmd, args string }

func readDockerfile(t *testing.T) []dockerInstr {
	t.Helper()
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var out []dockerInstr
	var cur string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || (line == "" && cur == "") {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur += s + " "
			continue
		}
		cur += line
		cmd, args, _ := strings.Cut(cur, " ")
		out = append(out, dockerInstr{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// execForm parses an instruction's JSON array (exec form); shell form is
// refused: distroless has no shell.
func execForm(t *testing.T, in dockerInstr) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.args), &v); err != nil || len(v) == 0 {
		t.Fatalf("%s %s: want the exec form, a JSON array (the image has no shell): %v", in.cmd, in.args, err)
	}
	return v
}

// TestDeployDockerfile checks the image recipe against what it packages:
// the pinned toolchain, a static build stamped with its identity, a
// non-root final stage whose user, volume, port, health check and
// arguments agree with the binary's flags and with the Kubernetes
// manifest that runs it. It needs no container engine.
func TestDeployDockerfile(t *testing.T) {
	ins := readDockerfile(t)
	var froms []int
	for i, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, i)
		}
	}
	if len(froms) != 2 {
		t.Fatalf("%d FROM lines; want a build stage and a final stage", len(froms))
	}
	build, final := ins[froms[0]:froms[1]], ins[froms[1]:]

	wantGo := "golang:" + strings.TrimPrefix(pinnedToolchain, "go") + "-"
	if !strings.HasPrefix(build[0].args, wantGo) {
		t.Errorf("build stage FROM %s; want the pinned toolchain, %s…", build[0].args, wantGo)
	}
	var built bool
	for _, in := range build {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			built = true
			for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=", "-X main.commit=", "-X main.date=", "./cmd/sluice"} {
				if !strings.Contains(in.args, want) {
					t.Errorf("go build line lacks %s: %s", want, in.args)
				}
			}
		}
	}
	if !built {
		t.Error("the build stage never runs go build")
	}

	get := func(cmd string) dockerInstr {
		t.Helper()
		var found []dockerInstr
		for _, in := range final {
			if in.cmd == cmd {
				found = append(found, in)
			}
		}
		if len(found) != 1 {
			t.Fatalf("final stage: %d %s instructions; want 1", len(found), cmd)
		}
		return found[0]
	}
	if !strings.Contains(final[0].args, "distroless/static") || !strings.HasSuffix(final[0].args, ":nonroot") {
		t.Errorf("final stage FROM %s; want distroless static, nonroot", final[0].args)
	}
	entry := execForm(t, get("ENTRYPOINT"))
	if len(entry) != 1 || !strings.Contains(get("COPY").args, " "+entry[0]) {
		t.Errorf("ENTRYPOINT %q: want the one binary the final stage copies in", entry)
	}

	// The manifest runs the image as the same user, with its spool at the
	// image's volume.
	pod := readSidecar(t)
	user := get("USER").args
	uid, gid, _ := strings.Cut(user, ":")
	if u := pod.SecurityContext.RunAsUser; u == nil || strconv.Itoa(*u) != uid || uid == "0" || gid == "0" {
		t.Errorf("USER %s; want the non-root uid the manifest's runAsUser names (%v)", user, pod.SecurityContext.RunAsUser)
	}
	volumes := execForm(t, get("VOLUME"))
	var sidecar k8sContainer
	for _, c := range pod.InitContainers {
		if c.Name == "sluice" {
			sidecar = c
		}
	}
	var mounted bool
	for _, m := range sidecar.VolumeMounts {
		mounted = mounted || (m.MountPath == volumes[0] && !m.ReadOnly)
	}
	if len(volumes) != 1 || !mounted {
		t.Errorf("VOLUME %q: want the one path the manifest mounts the spool at", volumes)
	}

	// CMD is a valid `sluice run` command line, its data dir the volume,
	// listening on all interfaces at the exposed port.
	cmd := execForm(t, get("CMD"))
	if cmd[0] != "run" {
		t.Fatalf("CMD %q: want run", cmd)
	}
	var c nodeConfig
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.flags(fs)
	if err := fs.Parse(cmd[1:]); err != nil || fs.NArg() != 0 {
		t.Fatalf("CMD %q: not a sluice run command line: %v", cmd, err)
	}
	host, port, err := net.SplitHostPort(c.Listen)
	expose := get("EXPOSE").args
	if err != nil || host != "" || port != expose {
		t.Errorf("CMD --listen %q with EXPOSE %s: want all interfaces on the exposed port", c.Listen, expose)
	}
	if c.DataDir != volumes[0] {
		t.Errorf("CMD --data-dir %q; want the volume %s", c.DataDir, volumes[0])
	}
	for _, p := range sidecar.Ports {
		if strconv.Itoa(p.ContainerPort) != expose {
			t.Errorf("manifest containerPort %d; the image exposes %s", p.ContainerPort, expose)
		}
	}

	// HEALTHCHECK runs the binary's own health check on that port.
	hc := get("HEALTHCHECK").args
	i := strings.Index(hc, "CMD ")
	if i < 0 {
		t.Fatalf("HEALTHCHECK %s: want CMD [...]", hc)
	}
	probe := execForm(t, dockerInstr{"HEALTHCHECK", hc[i+4:]})
	if probe[0] != entry[0] || len(probe) < 2 || probe[1] != "healthcheck" {
		t.Fatalf("HEALTHCHECK runs %q; want %s healthcheck", probe, entry[0])
	}
	hfs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	hfs.SetOutput(io.Discard)
	url, _ := healthcheckFlags(hfs)
	if err := hfs.Parse(probe[2:]); err != nil || hfs.NArg() != 0 || !strings.Contains(*url, ":"+expose+"/healthz") {
		t.Errorf("HEALTHCHECK %q: want sluice healthcheck's flags, --url on port %s, /healthz (%v)", probe, expose, err)
	}

	// docs/deploy.md builds the image the manifest names.
	doc, err := os.ReadFile(deployDoc)
	if err != nil {
		t.Fatal(err)
	}
	image, _ := sidecar.Raw["image"].(string)
	if image == "" || !strings.Contains(string(doc), "docker build -t "+image+" ") {
		t.Errorf("%s: want the command building the manifest's image %q (docker build -t %s …)", deployDoc, image, image)
	}
}

// readSidecar returns the pod spec of the manifest's one Deployment.
func readSidecar(t *testing.T) k8sPodSpec {
	t.Helper()
	for _, o := range readManifest(t) {
		if o.Kind == "Deployment" {
			return o.Spec.Template.Spec
		}
	}
	t.Fatal("no Deployment in the manifest")
	return k8sPodSpec{}
}

// A healthy node passes `sluice healthcheck`; a port nobody listens on,
// or a non-200 answer, fails it.
func TestHealthcheck(t *testing.T) {
	addr, _ := startNode(t, "--upstream", natstest.Start(t).ClientURL(), "--data-dir", t.TempDir())
	if err := run(t.Context(), []string{"healthcheck", "--url", "http://" + addr + "/healthz"}, io.Discard, io.Discard); err != nil {
		t.Errorf("healthy node: %v", err)
	}
	if err := run(t.Context(), []string{"healthcheck", "--url", "http://" + addr + "/nope"}, io.Discard, io.Discard); err == nil {
		t.Error("404: want an error")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	if err := run(t.Context(), []string{"healthcheck", "--url", "http://" + dead + "/healthz", "--timeout", "2s"}, io.Discard, io.Discard); err == nil {
		t.Error("nobody listening: want an error")
	}
}
