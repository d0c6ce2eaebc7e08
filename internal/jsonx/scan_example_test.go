package jsonx_test

import (
	"fmt"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// A batch is split into its elements, each validated on its own, so that
// a bad one costs only itself.
func ExampleElements() {
	batch := []byte(`[{"type":"track"}, {"type":tru}, 42, {"type":"page"}]`)
	err := jsonx.Elements(batch, func(i int, raw []byte) error {
		fmt.Printf("%d %s: %v\n", i, raw, jsonx.Object(raw))
		return nil
	})
	fmt.Println(err)
	// Output:
	// 0 {"type":"track"}: <nil>
	// 1 {"type":tru}: invalid JSON at byte 11: unexpected character '}'
	// 2 42: invalid JSON at byte 0: not an object: starts with '4'
	// 3 {"type":"page"}: <nil>
	// <nil>
}

func ExampleMembers() {
	ev := []byte(`{"type":"track","write\u004bey":"k","properties":{"a":1}}`)
	jsonx.Members(ev, func(m jsonx.Member) error {
		fmt.Printf("%s = %s at [%d,%d)\n", m.Key, m.Value, m.Start, m.End)
		return nil
	})
	// Output:
	// type = "track" at [1,15)
	// writeKey = "k" at [16,35)
	// properties = {"a":1} at [36,56)
}

func ExampleAppendQuote() {
	text := []byte(`{"schema":"iglu:com.acme/x/jsonschema/1-0-0","data":{"path":"/a</b>"}}`)
	fmt.Printf("%s\n", jsonx.AppendQuote(nil, text))
	s, _ := jsonx.Unquote(jsonx.AppendQuote(nil, text))
	fmt.Println(string(s) == string(text))
	// Output:
	// "{\"schema\":\"iglu:com.acme/x/jsonschema/1-0-0\",\"data\":{\"path\":\"/a</b>\"}}"
	// true
}
