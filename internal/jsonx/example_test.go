package jsonx_test

import (
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/internal/jsonx"
)

func ExampleObject() {
	for _, ev := range []string{
		`{"type":"page","properties":{"path":"/","http_status":200}}`,
		`{"type":"page","properties":{"path":"/",}}`,
		`[{"type":"page"}]`,
		"{\"name\":\"caf\xe9\"}",
	} {
		fmt.Println(jsonx.Object([]byte(ev)))
	}

	var se *jsonx.SyntaxError
	if err := jsonx.Object([]byte(`{"a":1} {}`)); errors.As(err, &se) {
		fmt.Println(se.Offset, se.Msg)
	}
	// Output:
	// <nil>
	// invalid JSON at byte 40: unexpected character '}'
	// invalid JSON at byte 0: not an object: starts with '['
	// invalid JSON at byte 12: invalid UTF-8 in string
	// 8 trailing data after object
}
