package priority

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluicehq/sluice/internal/jsonx"
)

func TestValidatePath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"context.userAgent", true},
		{"properties.debug", true},
		{"context.page.*", true},
		{"a", true},
		{"", false},
		{"*", false},
		{"a..b", false},
		{".a", false},
		{"a.", false},
		{"a.*.b", false},
		{"a.b*", false},
		{"a.*x", false},
	} {
		err := ValidatePath(tc.path)
		if (err == nil) != tc.ok {
			t.Errorf("ValidatePath(%q) = %v, want ok=%v", tc.path, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidPath) {
			t.Errorf("ValidatePath(%q) = %v, want ErrInvalidPath", tc.path, err)
		}
	}
}

func TestFieldSetBelow(t *testing.T) {
	fs, err := NewFieldSet(DefaultFieldRules())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		min  int
		want []string
	}{
		{0, nil},
		{1, []string{"_metadata", "properties.debug"}},
		{10, []string{"_metadata", "properties.debug"}},
		{11, []string{"_metadata", "context.library", "context.userAgent", "integrations", "properties.debug"}},
		{20, []string{"_metadata", "context.library", "context.userAgent", "integrations", "properties.debug"}},
		{1000, []string{"_metadata", "context.campaign", "context.library", "context.page.*", "context.screen", "context.userAgent", "integrations", "properties.debug"}},
	} {
		got := fs.Below(tc.min).Patterns()
		if !slices.Equal(got, tc.want) {
			t.Errorf("Below(%d) = %q, want %q", tc.min, got, tc.want)
		}
	}
	if _, err := NewFieldSet([]FieldRule{{Path: "a.*.b"}}); !errors.Is(err, ErrInvalidPath) {
		t.Errorf("invalid rule: err = %v", err)
	}
	// duplicate paths keep the lowest priority
	fs, _ = NewFieldSet([]FieldRule{{"a", 5}, {"a", 2}})
	if got := fs.Below(3).Patterns(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("dup: %q", got)
	}
}

func mustPaths(t testing.TB, paths ...string) *Paths {
	t.Helper()
	p, err := CompilePaths(paths)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDropFieldsTable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		paths   []string
		in      string
		want    string
		dropped []string
	}{
		{"none", nil, `{"a":1}`, `{"a":1}`, nil},
		{"first", []string{"a"}, `{"a":1,"b":2,"c":3}`, `{"b":2,"c":3}`, []string{"a"}},
		{"middle", []string{"b"}, `{"a":1,"b":2,"c":3}`, `{"a":1,"c":3}`, []string{"b"}},
		{"last", []string{"c"}, `{"a":1,"b":2,"c":3}`, `{"a":1,"b":2}`, []string{"c"}},
		{"all", []string{"a", "b", "c"}, `{"a":1,"b":2,"c":3}`, `{}`, []string{"a", "b", "c"}},
		{"only", []string{"a"}, `{"a":{"x":[1,{"y":"}"}]}}`, `{}`, []string{"a"}},
		{"absent", []string{"z"}, `{"a":1}`, `{"a":1}`, nil},
		{"nested", []string{"context.userAgent"}, `{"context":{"ip":"1","userAgent":"UA","library":{"name":"x"}},"userAgent":"top"}`,
			`{"context":{"ip":"1","library":{"name":"x"}},"userAgent":"top"}`, []string{"context.userAgent"}},
		{"deeper", []string{"a.b.c"}, `{"a":{"b":{"c":1,"d":2},"c":3}}`, `{"a":{"b":{"d":2},"c":3}}`, []string{"a.b.c"}},
		{"wildcard", []string{"context.page.*"}, `{"context":{"page":{"url":"u","path":"/"},"ip":"1"}}`, `{"context":{"page":{},"ip":"1"}}`, []string{"context.page.*"}},
		{"wildcard non-object", []string{"context.page.*"}, `{"context":{"page":"p"}}`, `{"context":{"page":"p"}}`, nil},
		{"parent not object", []string{"a.b"}, `{"a":[{"b":1}],"b":2}`, `{"a":[{"b":1}],"b":2}`, nil},
		{"exact beats child", []string{"a", "a.b"}, `{"a":{"b":1},"c":2}`, `{"c":2}`, []string{"a"}},
		{"whitespace", []string{"b"}, " { \"a\" : 1 , \"b\" : [ 1 , 2 ] , \"c\" : { \"d\" : true } } \n", `{"a":1,"c":{ "d" : true }}`, []string{"b"}},
		{"escaped key", []string{"ab"}, `{"a\u0062":1,"c":2}`, `{"c":2}`, []string{"ab"}},
		{"escaped key kept", []string{"x"}, `{"a\"b":1}`, `{"a\"b":1}`, nil},
		{"duplicate keys", []string{"a"}, `{"a":1,"b":2,"a":3}`, `{"b":2}`, []string{"a"}},
		{"unicode key", []string{"é.x"}, `{"é":{"x":1,"y":2}}`, `{"é":{"y":2}}`, []string{"é.x"}},
		{"empty object", []string{"a"}, `{}`, `{}`, nil},
		{"numbers", []string{"n"}, `{"n":-1.5e+10,"m":0,"k":1E-2}`, `{"m":0,"k":1E-2}`, []string{"n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, dropped, err := DropFields([]byte("PREFIX"), []byte(tc.in), mustPaths(t, tc.paths...))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimPrefix(string(out), "PREFIX"); got != tc.want {
				t.Errorf("out = %s, want %s", got, tc.want)
			}
			if !slices.Equal(dropped, tc.dropped) {
				t.Errorf("dropped = %q, want %q", dropped, tc.dropped)
			}
			if !json.Valid(out[len("PREFIX"):]) {
				t.Errorf("invalid output %s", out)
			}
		})
	}
}

func TestDropFieldsMalformed(t *testing.T) {
	p := mustPaths(t, "a", "b.c")
	for _, in := range []string{
		``, ` `, `[]`, `"a"`, `1`, `null`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`, `{"a":1 "b":2}`,
		`{"a":1}x`, `{"a":1}{}`, `{a:1}`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":-}`,
		`{"a":tru}`, `{"a":nul}`, `{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\x01\"}", `{"a":"unterminated}`,
		`{"b":{"c":[1,2}}`, `{"b":{"c":1,}}`, `{"z":[1,]}`, `{"z":[,1]}`, `{"a":1}}`, `{"a":"x\`,
		`{"b":{"c":1} "d":2}`, `{"a":+1}`,
	} {
		out, dropped, err := DropFields(nil, []byte(in), p)
		if !errors.Is(err, ErrMalformedJSON) {
			t.Errorf("%q: err = %v, want ErrMalformedJSON", in, err)
		}
		if string(out) != in || dropped != nil {
			t.Errorf("%q: out = %q dropped %q, want input unchanged", in, out, dropped)
		}
		if json.Valid([]byte(in)) && strings.HasPrefix(strings.TrimSpace(in), "{") {
			t.Errorf("%q: test case is valid JSON", in)
		}
	}
	deep := strings.Repeat(`{"a":`, jsonx.MaxDepth+1) + "1" + strings.Repeat("}", jsonx.MaxDepth+1)
	if _, _, err := DropFields(nil, []byte(deep), p); !errors.Is(err, ErrMalformedJSON) {
		t.Errorf("deep: err = %v", err)
	}
	// Ingest refuses invalid UTF-8 in strings; so does DropFields, in a
	// dropped member or a kept one.
	for _, in := range []string{"{\"a\":\"\xff\"}", "{\"b\":{\"c\":1,\"d\":\"\xed\xa0\x80\"}}", "{\"\xc3\":1}"} {
		if out, _, err := DropFields(nil, []byte(in), p); !errors.Is(err, ErrMalformedJSON) || string(out) != in {
			t.Errorf("%q: out %q, err = %v, want input unchanged and ErrMalformedJSON", in, out, err)
		}
	}
}

func TestDropAppendsUnion(t *testing.T) {
	p := mustPaths(t, "a", "b")
	var dropped []string
	var out []byte
	var err error
	for _, ev := range []string{`{"a":1}`, `{"a":2,"b":3}`, `{"c":4}`} {
		out, dropped, err = p.Drop(out[:0], []byte(ev), dropped)
		if err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(dropped, []string{"a", "b"}) {
		t.Errorf("dropped = %q", dropped)
	}
}

// mapDrop is the reference: decode into maps, delete, re-encode.
func mapDrop(event []byte, paths []string) ([]byte, error) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(event))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data")
	}
	for _, p := range paths {
		segs := strings.Split(p, ".")
		cur := m
		for i, s := range segs {
			if s == "*" {
				clear(cur)
				break
			}
			if i == len(segs)-1 {
				delete(cur, s)
				break
			}
			next, ok := cur[s].(map[string]any)
			if !ok {
				break
			}
			cur = next
		}
	}
	return json.Marshal(m)
}

func semEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var x, y any
	dx := json.NewDecoder(bytes.NewReader(a))
	dx.UseNumber()
	dy := json.NewDecoder(bytes.NewReader(b))
	dy.UseNumber()
	if err := dx.Decode(&x); err != nil {
		t.Fatalf("decode %s: %v", a, err)
	}
	if err := dy.Decode(&y); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func loadEvents(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open("testdata/segment.events.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		evs = append(evs, slices.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

var benchPaths = []string{"_metadata", "context.library", "context.userAgent", "integrations", "properties.debug"}

func TestDropFieldsMatchesMapOnRealEvents(t *testing.T) {
	p := mustPaths(t, benchPaths...)
	for i, ev := range loadEvents(t) {
		out, dropped, err := DropFields(nil, ev, p)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		ref, err := mapDrop(ev, benchPaths)
		if err != nil {
			t.Fatal(err)
		}
		if !semEqual(t, out, ref) {
			t.Fatalf("event %d differs:\n got %s\nwant %s", i, out, ref)
		}
		if len(dropped) != 4 { // no properties.debug in these events
			t.Errorf("event %d: dropped %q", i, dropped)
		}
		if len(out) >= len(ev) {
			t.Errorf("event %d: nothing removed", i)
		}
	}
}

func TestDropFieldsNoAllocs(t *testing.T) {
	p := mustPaths(t, benchPaths...)
	ev := loadEvents(t)[0]
	buf := make([]byte, 0, 4096)
	dropped := make([]string, 0, 8)
	allocs := testing.AllocsPerRun(100, func() {
		_, _, _ = p.Drop(buf[:0], ev, dropped[:0])
	})
	if allocs != 0 {
		t.Errorf("allocs/op = %v, want 0", allocs)
	}
}

func FuzzDropFields(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"b":{"c":2,"d":[1,2,{"c":3}]},"e":{"f":{"g":"h"}}}`,
		`{"context":{"page":{"url":"u"},"userAgent":"x"},"properties":{"debug":true}}`,
		`{"a\u0062":1,"b":{"c":"\ud800"}}`,
		` {"a" : 1 } `,
		`{"a":1,"a":{"c":2}}`,
		`{"b":{"c":1},"b":2}`,
		`{"e":{"f":{}}}`,
		`[1]`,
		`{"a":`,
	} {
		f.Add([]byte(s))
	}
	paths := []string{"a", "b.c", "e.f.*", "context.userAgent", "context.page.*", "properties.debug"}
	p, err := CompilePaths(paths)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, _, err := DropFields(nil, in, p)
		// What ingest accepts: a JSON object with valid UTF-8, nested at
		// most jsonx.MaxDepth deep.
		valid := json.Valid(in) && utf8.Valid(in) && nesting(in) <= jsonx.MaxDepth
		isObj := valid && bytes.HasPrefix(bytes.TrimLeft(in, " \t\r\n"), []byte("{"))
		if err != nil {
			if isObj {
				t.Fatalf("rejected valid object %q: %v", in, err)
			}
			if !bytes.Equal(out, in) {
				t.Fatalf("error but output changed")
			}
			return
		}
		if !isObj {
			t.Fatalf("accepted invalid or non-object input %q", in)
		}
		if !json.Valid(out) {
			t.Fatalf("invalid output %q from %q", out, in)
		}
		ref, err := mapDrop(in, paths)
		if err != nil {
			t.Fatalf("reference failed on %q: %v", in, err)
		}
		if !semEqual(t, out, ref) {
			t.Fatalf("differs from map reference\n in %s\ngot %s\nref %s", in, out, ref)
		}
	})
}

// nesting returns the deepest nesting of objects and arrays in in, which
// must be valid JSON, read with encoding/json's tokenizer.
func nesting(in []byte) int {
	dec := json.NewDecoder(bytes.NewReader(in))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return deepest
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			deepest = max(deepest, depth)
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}

func BenchmarkDropFields(b *testing.B) {
	evs := loadEvents(b)
	p := mustPaths(b, benchPaths...)
	var n int64
	for _, e := range evs {
		n += int64(len(e))
	}
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(n / int64(len(evs)))
		buf := make([]byte, 0, 8192)
		dropped := make([]string, 0, 8)
		for i := 0; b.Loop(); i++ {
			var err error
			buf, dropped, err = p.Drop(buf[:0], evs[i%len(evs)], dropped[:0])
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("map", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(n / int64(len(evs)))
		for i := 0; b.Loop(); i++ {
			if _, err := mapDrop(evs[i%len(evs)], benchPaths); err != nil {
				b.Fatal(err)
			}
		}
	})
}
