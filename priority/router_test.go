package priority

import (
	"errors"
	"slices"
	"testing"

	"github.com/sluicehq/sluice/internal/jsonx"
)

func TestRouter(t *testing.T) {
	classes := Defaults(1 << 20)
	r, err := NewRouter(classes, []Rule{
		{Field: "event", Equals: []string{"Order Completed", "Fraud Signal"}, Class: ClassCritical},
		{Source: "replica", Class: ClassReplication},
		{Field: "context.import", Equals: []string{"true"}, Class: ClassBackfill},
		{Field: "type", Equals: []string{"track", "page", "identify"}, Source: "segment", Class: ClassIngest},
		{Field: "properties.batchJob", Class: ClassBackfill},
	}, ClassIngest)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		source, event, want string
	}{
		{"segment", `{"type":"track","event":"Order Completed"}`, ClassCritical},
		{"http", `{"event":"Fraud\u0020Signal"}`, ClassCritical},
		{"replica", `{"event":"x"}`, ClassReplication},
		{"segment", `{"type":"page","context":{"import":true}}`, ClassBackfill},
		{"segment", `{"type":"page","context":{"import":"true"}}`, ClassBackfill},
		{"segment", `{"type":"page","context":{"import":false}}`, ClassIngest},
		{"segment", `{"properties":{"x":[1,{"batchJob":1}],"batchJob":null}}`, ClassBackfill},
		{"segment", `{"properties":{"x":[1,{"batchJob":1}]}}`, ClassIngest},
		{"http", `{"type":"alias"}`, ClassIngest},
		{"http", `not json`, ClassIngest},
		{"http", `{"event":"Order Completed"`, ClassCritical}, // value complete before the break
		{"http", `{"a":[1,2,"]"],"event":"Fraud Signal"}`, ClassCritical},
		{"http", `{"a":{"event":"Fraud Signal"}}`, ClassIngest}, // top level only
	} {
		if got := r.Route(tc.source, []byte(tc.event)); got != tc.want {
			t.Errorf("Route(%q, %s) = %q, want %q", tc.source, tc.event, got, tc.want)
		}
	}
	if r.Default() != ClassIngest {
		t.Errorf("Default = %q", r.Default())
	}
}

func TestRouterErrors(t *testing.T) {
	classes := Defaults(0)
	for _, tc := range []struct {
		rules []Rule
		def   string
	}{
		{nil, "nope"},
		{[]Rule{{Class: "nope"}}, ClassIngest},
		{[]Rule{{Field: "a..b", Class: ClassIngest}}, ClassIngest},
		{[]Rule{{Field: "a.*", Class: ClassIngest}}, ClassIngest},
		{[]Rule{{Equals: []string{"x"}, Class: ClassIngest}}, ClassIngest},
	} {
		if _, err := NewRouter(classes, tc.rules, tc.def); !errors.Is(err, ErrInvalidRule) {
			t.Errorf("%+v: err = %v", tc, err)
		}
	}
}

func TestLookup(t *testing.T) {
	ev := []byte(` { "a" : { "b" : [1, {"c":2}] , "d":"x\"y" }, "e": null } `)
	for _, tc := range []struct {
		path []string
		want string
		ok   bool
	}{
		{[]string{"a", "b"}, `[1, {"c":2}]`, true},
		{[]string{"a", "d"}, `"x\"y"`, true},
		{[]string{"e"}, `null`, true},
		{[]string{"a", "b", "c"}, ``, false},
		{[]string{"z"}, ``, false},
		{[]string{"e", "f"}, ``, false},
	} {
		got, ok := Lookup(ev, tc.path)
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

func BenchmarkRoute(b *testing.B) {
	evs := loadEvents(b)
	r, err := NewRouter(Defaults(0), []Rule{
		{Field: "event", Equals: []string{"Order Completed"}, Class: ClassCritical},
		{Field: "type", Equals: []string{"page"}, Source: "segment", Class: ClassIngest},
	}, ClassBackfill)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if r.Route("segment", evs[i%len(evs)]) != ClassIngest {
			b.Fatal("misrouted")
		}
	}
}

// TestRouteValues checks that routing from the top-level values a scan
// found gives Route's answer on every valid event.
func TestRouteValues(t *testing.T) {
	r, err := NewRouter(Defaults(1<<20), []Rule{
		{Field: "event", Equals: []string{"Order Completed", "Fraud Signal"}, Class: ClassCritical},
		{Source: "replica", Class: ClassReplication},
		{Field: "context.import", Equals: []string{"true"}, Class: ClassBackfill},
		{Field: "type", Equals: []string{"track", "page", "identify"}, Source: "segment", Class: ClassIngest},
		{Field: "properties.batchJob", Class: ClassBackfill},
		{Field: "event", Class: ClassReplication},
	}, ClassIngest)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Fields(), []string{"event", "context", "type", "properties"}; !slices.Equal(got, want) {
		t.Fatalf("Fields() = %q, want %q", got, want)
	}
	evs := append(loadEvents(t),
		[]byte(`{"type":"track","event":"Order Completed"}`),
		[]byte(`{"event":"Fraud\u0020Signal"}`),
		[]byte(`{"type":"page","context":{"import":true}}`),
		[]byte(`{"type":"page","context":{"import":false},"context":{"import":true}}`),
		[]byte(`{"properties":{"x":[1,{"batchJob":1}],"batchJob":null}}`),
		[]byte(`{"properties":{"x":[1,{"batchJob":1}]}}`),
		[]byte(`{"type":"alias"}`),
		[]byte(`{"ev\u0065nt":"Order Completed"}`),
		[]byte(`{"event":"x","event":"Order Completed"}`),
		[]byte(`{"event" : [1, 2]}`),
		[]byte(`{}`),
	)
	for _, source := range []string{"segment", "replica", "http"} {
		for _, ev := range evs {
			values := make([][]byte, len(r.Fields()))
			if err := jsonx.ObjectMembers(ev, func(m jsonx.Member) error {
				if i := slices.Index(r.Fields(), string(m.Key)); i >= 0 && values[i] == nil {
					values[i] = m.Value
				}
				return nil
			}); err != nil {
				t.Fatalf("%s: %v", ev, err)
			}
			if got, want := r.RouteValues(source, values), r.Route(source, ev); got != want {
				t.Errorf("RouteValues(%q, %s) = %q, Route = %q", source, ev, got, want)
			}
		}
	}
	if r.RuleClass(-1) != ClassIngest || r.RuleClass(0) != ClassCritical {
		t.Errorf("RuleClass(-1), RuleClass(0) = %q, %q", r.RuleClass(-1), r.RuleClass(0))
	}
}
