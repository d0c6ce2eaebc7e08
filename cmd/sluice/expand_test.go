package main

import (
	"strings"
	"testing"
)

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"KEY": "s3cret", "EMPTY": "", "NL": "a\nb"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tt := range []struct{ in, want, err string }{
		{in: "key: ${KEY}\n", want: "key: s3cret\n"},
		{in: "a: x${KEY}y", want: "a: xs3crety"},
		{in: "a: ${MISSING:-dflt}", want: "a: dflt"},
		{in: "a: ${EMPTY:-dflt}", want: "a: dflt"},
		{in: "a: $${KEY} $HOME", want: "a: ${KEY} $HOME"},
		{in: "a: 1\nb: ${MISSING}\n", err: "line 2: ${MISSING}: environment variable not set"},
		{in: "a: ${1BAD}", err: "line 1: ${1BAD}: want ${NAME}"},
		{in: "a: ${KEY\nb: 1", err: "line 1: unterminated ${"},
		{in: "a: ${NL}", err: "line 1: ${NL} holds a newline"},
	} {
		got, err := expandEnv([]byte(tt.in), lookup)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.in, err, tt.err)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("%q: error shows a value: %v", tt.in, err)
			}
		case err != nil:
			t.Errorf("%q: %v", tt.in, err)
		case string(got) != tt.want:
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestExpandEnvComments(t *testing.T) {
	lookup := func(k string) (string, bool) { return "v", k == "X" }
	for _, tt := range []struct{ in, want string }{
		{"# ${UNSET} in a comment\na: ${X} # and ${UNSET}\n", "# ${UNSET} in a comment\na: v # and ${UNSET}\n"},
		{`a: "x#${X}"`, `a: "x#v"`},
		{"a: b#${X}", "a: b#v"}, // '#' not after a space: not a comment
	} {
		got, err := expandEnv([]byte(tt.in), lookup)
		if err != nil || string(got) != tt.want {
			t.Errorf("%q: got %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
