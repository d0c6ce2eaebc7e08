package priority

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDefaultsValidate(t *testing.T) {
	for _, link := range []int64{0, 125_000, 2_500_000, 125_000_000} {
		cs := Defaults(link)
		if err := Validate(cs, Rate{BytesPerSec: link}); err != nil {
			t.Errorf("link %d: %v", link, err)
		}
		if len(cs) != 4 || cs[0].Name != ClassCritical || !cs[0].Critical {
			t.Fatalf("defaults: %+v", cs)
		}
	}
	cs := Defaults(1_000_000)
	// critical never degraded; replication deferred at L1+; backfill throttled at L0.
	for lv := range Levels {
		if a := cs[0].ActionAt(lv); a.Kind != ActionNone {
			t.Errorf("critical L%d = %v", lv, a.Kind)
		}
	}
	if cs[2].ActionAt(1).Kind != ActionDefer || cs[3].ActionAt(0).Kind != ActionThrottle || cs[3].ActionAt(1).Kind != ActionDefer {
		t.Errorf("plans: %+v %+v", cs[2].Plan, cs[3].Plan)
	}
	// No default throws an acknowledged event away: no class expires, and
	// a max age set later demotes unless drop is asked for.
	for _, c := range cs {
		if c.MaxAge != 0 || c.Expire != ExpireDemote {
			t.Errorf("%s: max age %v, expire %q; want none, demote", c.Name, c.MaxAge, c.Expire)
		}
	}
	if a := cs[1].ActionAt(9); a.Kind != ActionDefer {
		t.Errorf("ActionAt clamps: %v", a)
	}
	fs, err := NewFieldSet(cs[1].Fields)
	if err != nil {
		t.Fatal(err)
	}
	if got := fs.Below(cs[1].ActionAt(1).MinFieldPriority).Len(); got != 2 {
		t.Errorf("ingest L1 drops %d paths, want 2", got)
	}
}

func TestValidateErrors(t *testing.T) {
	ok := func() []Class { return Defaults(1_000_000) }
	link := Rate{BytesPerSec: 1_000_000}
	for _, tc := range []struct {
		name string
		mod  func(cs []Class) []Class
		link Rate
		want string
	}{
		{"empty", func([]Class) []Class { return nil }, link, "no classes"},
		{"no name", func(cs []Class) []Class { cs[1].Name = ""; return cs }, link, "class #1: empty name"},
		{"dup", func(cs []Class) []Class { cs[2].Name = ClassIngest; return cs }, link, `class "ingest": duplicate name (classes #1 and #2)`},
		{"prio", func(cs []Class) []Class { cs[1].Priority = 8; return cs }, link, "priority 8 outside 0..7"},
		{"ceil<rate", func(cs []Class) []Class { cs[1].Ceil.BytesPerSec = 1000; return cs }, link, `class "ingest": ceil bytes/s 1000 < rate 350000`},
		{"ceil>link", func(cs []Class) []Class { cs[3].Ceil.BytesPerSec = 2_000_000; return cs }, link, `class "backfill": ceil bytes/s 2000000 > link ceil 1000000`},
		{"sum", func(cs []Class) []Class { cs[3].Rate.BytesPerSec = 500_000; return cs }, link, "sum of rates 1100000 bytes/s > link ceil 1000000 bytes/s"},
		{"crit no ceil", func(cs []Class) []Class { cs[0].Ceil.BytesPerSec = 0; return cs }, link, `critical class "critical": needs a ceil bytes/s`},
		{"crit ceil", func(cs []Class) []Class { cs[0].Ceil.BytesPerSec = 600_000; return cs }, link, `critical class "critical": ceil bytes/s 600000 + others' rates 500000 > link ceil 1000000`},
		{"compression", func(cs []Class) []Class { cs[0].Compression = "max"; return cs }, link, `unknown compression "max"`},
		{"compression min", func(cs []Class) []Class { cs[0].CompressionMin = "auto"; return cs }, link, `unknown compression_min "auto"`},
		{"compression bounds", func(cs []Class) []Class {
			cs[1].CompressionMin, cs[1].CompressionMax = CompressionBest, CompressionDefault
			return cs
		}, link, `class "ingest": compression_min "best" above compression_max "default"`},
		{"overflow", func(cs []Class) []Class { cs[0].Overflow = "spill"; return cs }, link, `unknown overflow "spill"`},
		{"expire", func(cs []Class) []Class { cs[1].Expire = "delete"; return cs }, link, `class "ingest": unknown expire "delete" (want demote or drop)`},
		{"action", func(cs []Class) []Class { cs[0].Plan[2].Kind = 9; return cs }, link, "level 2: unknown action ActionKind(9)"},
		{"path", func(cs []Class) []Class { cs[1].Fields = append(cs[1].Fields, FieldRule{Path: "a.*.b"}); return cs }, link, `class "ingest": priority: invalid field path: "a.*.b"`},
		{"negative", func(cs []Class) []Class { cs[1].MaxAge = -time.Second; cs[1].Weight = -1; return cs }, link, "negative weight -1"},
		{"msgs", func(cs []Class) []Class { cs[1].Rate.MsgsPerSec = 50; return cs }, Rate{BytesPerSec: 1_000_000, MsgsPerSec: 10}, "sum of rates 50 msgs/s > link ceil 10 msgs/s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.mod(ok()), tc.link)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalidClass) && !errors.Is(err, ErrInvalidPath) {
				t.Errorf("err does not wrap a sentinel: %v", err)
			}
		})
	}
}
