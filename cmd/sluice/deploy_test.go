package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The deployment docs: docs/deploy.md, the systemd unit and the Kubernetes
// manifest. These tests check they agree with each other and with the
// config file's keys; they need neither systemd nor a cluster.
const (
	deployDoc      = "../../docs/deploy.md"
	deployUnit     = "../../docs/deploy/sluice.service"
	deployManifest = "../../docs/deploy/k8s-sidecar.yaml"
)

// deployConfig is the part of a config file the deploy checks look at.
type deployConfig struct {
	DataDir      string           `yaml:"data_dir"`
	Listen       string           `yaml:"listen"`
	Upstream     string           `yaml:"upstream"`
	DrainTimeout time.Duration    `yaml:"drain_timeout"`
	TLS          serverTLS        `yaml:"tls"`
	UpstreamAuth natsAuth         `yaml:"upstream_auth"`
	Ingest       ingestConfig     `yaml:"ingest"`
	NATSIngest   natsIngestConfig `yaml:"nats_ingest"`
	Spool        spoolConfig      `yaml:"spool"`
}

// secretFiles are the paths of the *_file keys of c.
func (c deployConfig) secretFiles() []string {
	var files []string
	add := func(p ...string) {
		for _, f := range p {
			if f != "" {
				files = append(files, f)
			}
		}
	}
	a := c.UpstreamAuth
	add(c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientCAFile)
	add(a.TLS.CAFile, a.TLS.CertFile, a.TLS.KeyFile, a.CredsFile, a.NKeyFile, a.TokenFile, a.PasswordFile)
	for _, k := range c.Ingest.Keys {
		add(k.KeyFile)
	}
	return files
}

// decodeDeployConfig decodes a config file of the docs: strictly, as
// `sluice run` reads it (unknown keys are errors), then the checked part.
// The tls and upstream_auth sections are those of tls.go and natsauth.go
// until fileConfig has them itself.
func decodeDeployConfig(t *testing.T, data []byte) deployConfig {
	t.Helper()
	fc := reflect.TypeFor[fileConfig]()
	fields := []reflect.StructField{{Name: "File", Type: fc, Tag: `yaml:",inline"`}}
	for _, s := range []struct {
		key, name string
		typ       reflect.Type
	}{
		{"tls", "TLS", reflect.TypeFor[serverTLS]()},
		{"upstream_auth", "UpstreamAuth", reflect.TypeFor[natsAuth]()},
	} {
		if !hasYAMLKey(fc, s.key) {
			fields = append(fields, reflect.StructField{Name: s.name, Type: s.typ, Tag: reflect.StructTag(`yaml:"` + s.key + `"`)})
		}
	}
	strict := reflect.New(reflect.StructOf(fields))
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(strict.Interface()); err != nil {
		t.Fatalf("config:\n%s\n%v", data, err)
	}
	var c deployConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func hasYAMLKey(typ reflect.Type, key string) bool {
	for f := range typ.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key {
			return true
		}
	}
	return false
}

// checkDeployConfig checks what the docs rely on in any config: the
// settings agree (without reading the files, which are the target host's).
func checkDeployConfig(t *testing.T, c deployConfig) {
	t.Helper()
	if c.DataDir == "" || c.Listen == "" || c.Upstream == "" || c.DrainTimeout <= 0 {
		t.Errorf("config %+v: want data_dir, listen, upstream and drain_timeout", c)
	}
	if _, _, err := c.TLS.check(); err != nil {
		t.Errorf("config: tls: %v", err)
	}
	if err := c.UpstreamAuth.check(); err != nil {
		t.Errorf("config: upstream_auth: %v", err)
	}
	for i, k := range c.Ingest.Keys {
		if k.Key != "" || k.KeyFile == "" {
			t.Errorf("config: ingest.keys[%d]: want key_file, not an inline key", i)
		}
	}
	if a := c.UpstreamAuth; a.Token != "" || a.Password != "" {
		t.Error("config: upstream_auth: an inline secret; want the *_file form")
	}
}

// docYAMLBlocks returns the ```yaml blocks of a Markdown file.
func docYAMLBlocks(t *testing.T, file string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks [][]byte
	for _, m := range regexp.MustCompile("(?ms)^```yaml\n(.*?)^```").FindAllSubmatch(data, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// docConfig is the config file of docs/deploy.md: the yaml block that
// starts with "# /etc/sluice/sluice.yaml".
func docConfig(t *testing.T) deployConfig {
	t.Helper()
	for _, b := range docYAMLBlocks(t, deployDoc) {
		if bytes.HasPrefix(b, []byte("# /etc/sluice/sluice.yaml\n")) {
			return decodeDeployConfig(t, b)
		}
	}
	t.Fatalf("%s: no yaml block starting with # /etc/sluice/sluice.yaml", deployDoc)
	return deployConfig{}
}

func TestDeployDocConfig(t *testing.T) {
	c := docConfig(t)
	checkDeployConfig(t, c)
	if c.TLS.CertFile == "" || c.UpstreamAuth.CredsFile == "" || len(c.Ingest.Keys) == 0 {
		t.Errorf("config %+v: want it to show tls, upstream_auth and ingest keys", c)
	}
	// Every yaml block of the page parses.
	for i, b := range docYAMLBlocks(t, deployDoc) {
		var v any
		if err := yaml.Unmarshal(b, &v); err != nil {
			t.Errorf("%s: yaml block %d: %v\n%s", deployDoc, i+1, err, b)
		}
	}
}

// systemdUnit is a unit file: section → key → values, in order.
type systemdUnit map[string]map[string][]string

func readSystemdUnit(t *testing.T, file string) systemdUnit {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := systemdUnit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				t.Fatalf("%s:%d: %q: want Key=value in a section, on one line", file, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// last is the value of a key that is set once (or the last setting wins).
func (u systemdUnit) last(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func TestDeploySystemdUnit(t *testing.T) {
	u := readSystemdUnit(t, deployUnit)
	c := docConfig(t)
	want := map[string]string{
		"Restart":         "on-failure",
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
		"ProtectHome":     "yes",
		"PrivateTmp":      "yes",
		"StateDirectory":  path.Base(c.DataDir),
		"ExecReload":      "/bin/kill -HUP $MAINPID",
		"KillSignal":      "SIGTERM",
	}
	for k, v := range want {
		if got := u.last("Service", k); got != v {
			t.Errorf("[Service] %s=%q; want %q", k, got, v)
		}
	}
	if user := u.last("Service", "User"); user == "" || user == "root" || u.last("Service", "DynamicUser") == "yes" {
		t.Errorf("[Service] User=%q; want a dedicated user", user)
	}
	if c.DataDir != "/var/lib/"+u.last("Service", "StateDirectory") {
		t.Errorf("data_dir %s is not the StateDirectory /var/lib/%s", c.DataDir, u.last("Service", "StateDirectory"))
	}
	if rw := strings.Fields(strings.Join(u["Service"]["ReadWritePaths"], " ")); !slices.Contains(rw, c.DataDir) {
		t.Errorf("[Service] ReadWritePaths=%v; want the data dir %s", rw, c.DataDir)
	}
	if n, err := strconv.Atoi(u.last("Service", "LimitNOFILE")); err != nil || n < 8192 {
		t.Errorf("[Service] LimitNOFILE=%q; want ≥ 8192", u.last("Service", "LimitNOFILE"))
	}
	stop, err := time.ParseDuration(u.last("Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("[Service] TimeoutStopSec=%q: %v (write it with a unit, as 90s)", u.last("Service", "TimeoutStopSec"), err)
	}
	if stop < c.DrainTimeout+15*time.Second {
		t.Errorf("TimeoutStopSec %v; want ≥ drain_timeout %v + 15s, so systemd does not cut the drain short", stop, c.DrainTimeout)
	}
	args := strings.Fields(u.last("Service", "ExecStart"))
	if len(args) < 4 || path.Base(args[0]) != "sluice" || args[1] != "run" || args[2] != "--config" || args[3] != "/etc/sluice/sluice.yaml" {
		t.Errorf("ExecStart=%q; want sluice run --config /etc/sluice/sluice.yaml", args)
	}
	if u.last("Install", "WantedBy") != "multi-user.target" {
		t.Error("[Install] WantedBy: want multi-user.target")
	}
}

// The manifest's types: only the fields checked. Keys not listed in
// k8sKnownKeys are typos (a misspelt probe is a probe that never runs).
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct{ Name string }
	Data       map[string]string `yaml:"data"`
	Spec       struct {
		Template struct {
			Spec k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sPodSpec struct {
	TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               k8sSecurity    `yaml:"securityContext"`
	InitContainers                []k8sContainer `yaml:"initContainers"`
	Containers                    []k8sContainer `yaml:"containers"`
	Volumes                       []k8sVolume    `yaml:"volumes"`
	Raw                           map[string]any `yaml:",inline"`
}

type k8sSecurity struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	Capabilities             struct {
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
}

type k8sContainer struct {
	Name          string   `yaml:"name"`
	RestartPolicy string   `yaml:"restartPolicy"`
	Args          []string `yaml:"args"`
	Ports         []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Lifecycle      *struct {
		PreStop map[string]any `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext k8sSecurity `yaml:"securityContext"`
	VolumeMounts    []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	Raw map[string]any `yaml:",inline"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
	Raw map[string]any `yaml:",inline"`
}

type k8sVolume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName string `yaml:"secretName"`
	} `yaml:"secret"`
	EmptyDir *struct {
		SizeLimit string `yaml:"sizeLimit"`
	} `yaml:"emptyDir"`
	PersistentVolumeClaim *struct {
		ClaimName string `yaml:"claimName"`
	} `yaml:"persistentVolumeClaim"`
}

// k8sKnownKeys are the other keys the manifest may use at each level.
var k8sKnownKeys = map[string][]string{
	"pod":       {"automountServiceAccountToken", "enableServiceLinks", "serviceAccountName", "nodeSelector", "affinity", "tolerations"},
	"container": {"image", "imagePullPolicy", "command", "env", "envFrom"},
	"probe":     {"initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold", "terminationGracePeriodSeconds"},
}

func checkKnownKeys(t *testing.T, where, level string, raw map[string]any) {
	t.Helper()
	for k := range raw {
		if !slices.Contains(k8sKnownKeys[level], k) {
			t.Errorf("%s: unknown key %q", where, k)
		}
	}
}

func readManifest(t *testing.T) []k8sObject {
	t.Helper()
	data, err := os.ReadFile(deployManifest)
	if err != nil {
		t.Fatal(err)
	}
	var objs []k8sObject
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", deployManifest, len(objs)+1, err)
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Fatalf("%s: document %d: want apiVersion, kind and metadata.name", deployManifest, len(objs)+1)
		}
		objs = append(objs, o)
	}
}

// mebibytes parses a memory quantity such as 384Mi or 1Gi.
func mebibytes(t *testing.T, q string) int {
	t.Helper()
	for suffix, mul := range map[string]int{"Mi": 1, "Gi": 1024} {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			v, err := strconv.Atoi(n)
			if err == nil {
				return v * mul
			}
		}
	}
	t.Fatalf("memory quantity %q: want N Mi or N Gi", q)
	return 0
}

func TestDeployKubernetesSidecar(t *testing.T) {
	objs := readManifest(t)
	configMaps := map[string]k8sObject{}
	var deploys []k8sObject
	for _, o := range objs {
		switch o.Kind {
		case "ConfigMap":
			configMaps[o.Metadata.Name] = o
		case "Deployment":
			deploys = append(deploys, o)
		case "Secret":
			t.Errorf("Secret %s in the manifest: secrets are created apart (kubectl create secret), never applied as placeholders", o.Metadata.Name)
		}
	}
	if len(deploys) != 1 {
		t.Fatalf("%d Deployments; want 1", len(deploys))
	}
	pod := deploys[0].Spec.Template.Spec
	checkKnownKeys(t, "pod spec", "pod", pod.Raw)

	// sluice: a native sidecar, and the collector next to it.
	var sluice *k8sContainer
	for i, c := range pod.InitContainers {
		if c.Name == "sluice" {
			sluice = &pod.InitContainers[i]
		}
	}
	if sluice == nil || sluice.RestartPolicy != "Always" {
		t.Fatal("want sluice as a native sidecar: an init container named sluice with restartPolicy: Always")
	}
	if len(pod.Containers) == 0 {
		t.Fatal("no collector container")
	}
	all := append(slices.Clone(pod.InitContainers), pod.Containers...)

	volumes := map[string]k8sVolume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, c := range all {
		checkKnownKeys(t, "container "+c.Name, "container", c.Raw)
		for _, p := range []*k8sProbe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
			if p != nil {
				checkKnownKeys(t, "container "+c.Name+" probe", "probe", p.Raw)
			}
		}
		for _, m := range c.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				t.Errorf("container %s mounts %q: no such volume", c.Name, m.Name)
			}
		}
		// Non-root, read-only root file system, no escalation.
		sc := c.SecurityContext
		nonRoot := (pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot) ||
			(sc.RunAsNonRoot != nil && *sc.RunAsNonRoot)
		switch {
		case !nonRoot:
			t.Errorf("container %s: want runAsNonRoot: true", c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("container %s: want readOnlyRootFilesystem: true", c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("container %s: want allowPrivilegeEscalation: false", c.Name)
		case !slices.Contains(sc.Capabilities.Drop, "ALL"):
			t.Errorf("container %s: want capabilities.drop: [ALL]", c.Name)
		}
		if c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
			t.Errorf("container %s: want memory requests and limits", c.Name)
		}
	}

	// The config: from the ConfigMap mounted where --config points.
	mountOf := func(volume string) (string, bool) {
		for _, m := range sluice.VolumeMounts {
			if m.Name == volume {
				return m.MountPath, m.ReadOnly
			}
		}
		return "", false
	}
	i := slices.Index(sluice.Args, "--config")
	if len(sluice.Args) < 2 || sluice.Args[0] != "run" || i < 0 || i+1 >= len(sluice.Args) {
		t.Fatalf("sluice args %q: want run --config FILE", sluice.Args)
	}
	configFile := sluice.Args[i+1]
	var config deployConfig
	found := false
	for _, v := range pod.Volumes {
		dir, _ := mountOf(v.Name)
		if v.ConfigMap == nil || dir == "" || path.Dir(configFile) != dir {
			continue
		}
		cm, ok := configMaps[v.ConfigMap.Name]
		if !ok {
			t.Fatalf("volume %s: ConfigMap %s is not in the manifest", v.Name, v.ConfigMap.Name)
		}
		data, ok := cm.Data[path.Base(configFile)]
		if !ok {
			t.Fatalf("ConfigMap %s has no key %s (--config %s)", cm.Metadata.Name, path.Base(configFile), configFile)
		}
		config, found = decodeDeployConfig(t, []byte(data)), true
	}
	if !found {
		t.Fatalf("--config %s: no ConfigMap volume mounted at %s", configFile, path.Dir(configFile))
	}
	checkDeployConfig(t, config)

	// Every *_file is in a Secret mounted read-only.
	secretNames := map[string]bool{}
	for _, f := range config.secretFiles() {
		ok := false
		for _, v := range pod.Volumes {
			dir, ro := mountOf(v.Name)
			if v.Secret != nil && dir != "" && path.Dir(f) == dir {
				ok = ro
				secretNames[v.Secret.SecretName] = true
			}
		}
		if !ok {
			t.Errorf("config file %s: not in a Secret volume mounted read-only in the sluice container", f)
		}
	}
	if len(config.secretFiles()) == 0 {
		t.Error("the config names no secret files")
	}
	doc, err := os.ReadFile(deployDoc)
	if err != nil {
		t.Fatal(err)
	}
	for name := range secretNames {
		if !bytes.Contains(doc, []byte("kubectl create secret generic "+name)) {
			t.Errorf("%s: want the command creating Secret %s", deployDoc, name)
		}
	}

	// The spool: a writable volume at data_dir.
	var spool *k8sVolume
	for _, v := range pod.Volumes {
		if dir, ro := mountOf(v.Name); dir == config.DataDir && !ro {
			spool = &v
		}
	}
	if spool == nil || (spool.EmptyDir == nil && spool.PersistentVolumeClaim == nil) {
		t.Fatalf("data_dir %s: want a writable emptyDir or PVC mounted there", config.DataDir)
	}
	if spool.EmptyDir != nil {
		// Past the sizeLimit the kubelet evicts the pod, spool and all; at
		// spool.max_bytes producers get 429. The cap must come first.
		if spool.EmptyDir.SizeLimit == "" {
			t.Fatal("spool emptyDir: want a sizeLimit")
		}
		limit := int64(mebibytes(t, spool.EmptyDir.SizeLimit)) << 20
		max, err := parseSize(config.Spool.MaxBytes)
		if err != nil || max <= 0 || max > limit*9/10 {
			t.Errorf("spool.max_bytes %q: want a cap ≤ 90%% of the emptyDir's sizeLimit %s (%v)", config.Spool.MaxBytes, spool.EmptyDir.SizeLimit, err)
		}
		if eph := sluice.Resources.Limits["ephemeral-storage"]; eph == "" || int64(mebibytes(t, eph))<<20 < limit {
			t.Errorf("sluice ephemeral-storage limit %q: want ≥ the spool's sizeLimit %s", eph, spool.EmptyDir.SizeLimit)
		}
	}

	// Probes on the listen port: readiness /readyz, liveness /healthz.
	_, port, err := net.SplitHostPort(config.Listen)
	if err != nil {
		t.Fatalf("listen %q: %v", config.Listen, err)
	}
	if host, _, _ := net.SplitHostPort(config.Listen); host == "127.0.0.1" || host == "localhost" {
		t.Errorf("listen %q: the kubelet's probes cannot reach loopback", config.Listen)
	}
	probe := func(name string, p *k8sProbe, wantPath string) {
		t.Helper()
		if p == nil {
			t.Errorf("sluice: no %s probe", name)
			return
		}
		if p.HTTPGet.Path != wantPath {
			t.Errorf("sluice %s probe: path %q; want %s", name, p.HTTPGet.Path, wantPath)
		}
		got := ""
		switch v := p.HTTPGet.Port.(type) {
		case int:
			got = strconv.Itoa(v)
		case string:
			for _, cp := range sluice.Ports {
				if cp.Name == v {
					got = strconv.Itoa(cp.ContainerPort)
				}
			}
		}
		if got != port {
			t.Errorf("sluice %s probe: port %v is %q; want the listen port %s", name, p.HTTPGet.Port, got, port)
		}
	}
	probe("readiness", sluice.ReadinessProbe, "/readyz")
	probe("liveness", sluice.LivenessProbe, "/healthz")
	probe("startup", sluice.StartupProbe, "/healthz")

	// Shutdown: the grace period covers the drain.
	grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second
	if grace < config.DrainTimeout+30*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v; want ≥ drain_timeout %v + 30s for the collector's flush and a margin", grace, config.DrainTimeout)
	}

	// Memory: the 5 GB drain peaks at 160 MB RSS (bench/RESULTS.md).
	if req := mebibytes(t, sluice.Resources.Requests["memory"]); req < 160 {
		t.Errorf("sluice memory request %dMi; want ≥ 160Mi, the measured peak", req)
	}
	if lim := mebibytes(t, sluice.Resources.Limits["memory"]); lim < 256 {
		t.Errorf("sluice memory limit %dMi; want ≥ 256Mi, headroom over the measured 160 MB peak", lim)
	}
}
