package sluice_test

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestNoticeListsTheBinarysModules keeps NOTICE's table of third-party
// licences equal to the modules the sluice binary links: a dependency added
// or dropped without its licence row fails here.
func TestNoticeListsTheBinarysModules(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", "./cmd/sluice").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var linked []string
	for _, m := range strings.Fields(string(out)) {
		if m != module && !slices.Contains(linked, m) {
			linked = append(linked, m)
		}
	}
	notice, err := os.ReadFile("NOTICE")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`(?m)^\| ([a-z0-9./_-]+) \| ([^|]+) \|$`)
	var listed []string
	for _, m := range row.FindAllStringSubmatch(string(notice), -1) {
		if m[1] != "module" && m[1] != "---" {
			listed = append(listed, m[1])
		}
	}
	slices.Sort(linked)
	slices.Sort(listed)
	if len(linked) < 10 || !slices.Equal(linked, listed) {
		t.Errorf("NOTICE lists %d modules, the binary links %d:\nlisted %v\nlinked %v", len(listed), len(linked), listed, linked)
	}
	if lic, err := os.ReadFile("LICENSE"); err != nil || !strings.Contains(string(lic), "Apache License\n                           Version 2.0, January 2004") {
		t.Errorf("LICENSE is not the Apache-2.0 text (err %v)", err)
	}
}
