package ingest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

const (
	webKey = "wk_live_3f9a8b7c6d5e4f3a"
	iosKey = "wk_live_0a1b2c3d4e5f6a7b"
)

func basic(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }

func TestPresentedKey(t *testing.T) {
	tests := []struct {
		name    string
		header  map[string]string
		want    string
		wantErr string
	}{
		{name: "none"},
		{name: "X-Sluice-Key", header: map[string]string{"X-Sluice-Key": webKey}, want: webKey},
		{name: "Basic user (Segment)", header: map[string]string{"Authorization": basic(webKey + ":")}, want: webKey},
		{name: "Basic user and password: the user", header: map[string]string{"Authorization": basic(webKey + ":ignored")}, want: webKey},
		{name: "Basic password when the user is empty", header: map[string]string{"Authorization": basic(":" + webKey)}, want: webKey},
		{name: "Basic without colon is all user", header: map[string]string{"Authorization": basic(webKey)}, want: webKey},
		{name: "Basic password keeps its colons", header: map[string]string{"Authorization": basic(":a:b")}, want: "a:b"},
		{name: "Basic scheme case-insensitive, extra spaces", header: map[string]string{"Authorization": "  bAsIc   " + base64.StdEncoding.EncodeToString([]byte(webKey+":")) + " "}, want: webKey},
		{name: "Basic without padding", header: map[string]string{"Authorization": "Basic " + base64.RawStdEncoding.EncodeToString([]byte("ab:"))}, want: "ab"},
		{name: "Bearer", header: map[string]string{"Authorization": "Bearer " + webKey}, want: webKey},
		{name: "bearer lower case", header: map[string]string{"Authorization": "bearer " + webKey}, want: webKey},
		{name: "X-Sluice-Key wins", header: map[string]string{"X-Sluice-Key": iosKey, "Authorization": "Bearer " + webKey}, want: iosKey},
		{name: "X-Sluice-Key wins over a foreign scheme", header: map[string]string{"X-Sluice-Key": iosKey, "Authorization": "Negotiate abc"}, want: iosKey},

		{name: "Basic not base64", header: map[string]string{"Authorization": "Basic " + webKey + "!"},
			wantErr: "malformed Authorization header: Basic credentials are not valid base64"},
		{name: "Basic with bad padding", header: map[string]string{"Authorization": "Basic YWI6="},
			wantErr: "malformed Authorization header: Basic credentials are not valid base64"},
		{name: "Basic without credentials", header: map[string]string{"Authorization": "Basic"},
			wantErr: "malformed Authorization header: Basic without credentials"},
		{name: "Basic with blank credentials", header: map[string]string{"Authorization": "Basic    "},
			wantErr: "malformed Authorization header: Basic without credentials"},
		{name: "Basic of a lone colon", header: map[string]string{"Authorization": basic(":")},
			wantErr: "malformed Authorization header: Basic credentials with neither user nor password"},
		{name: "Basic of nothing", header: map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString(nil) + "="},
			wantErr: "malformed Authorization header: Basic credentials are not valid base64"},
		{name: "Bearer without token", header: map[string]string{"Authorization": "Bearer "},
			wantErr: "malformed Authorization header: Bearer without a token"},
		{name: "other scheme", header: map[string]string{"Authorization": "Digest username=x"},
			wantErr: "unsupported Authorization scheme: use Basic or Bearer, or send X-Sluice-Key"},
		{name: "a bare key is not repeated", header: map[string]string{"Authorization": webKey},
			wantErr: "unsupported Authorization scheme: use Basic or Bearer, or send X-Sluice-Key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			got, err := presentedKey(h)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || got != "" {
					t.Fatalf("got %q, %v; want error %q", got, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), webKey) {
					t.Fatalf("error %q repeats the key", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestKeyringAuthorize(t *testing.T) {
	kr, err := newKeyring([]Key{
		{Key: webKey, Source: "web"},
		{Key: iosKey, Source: "ios", Class: "critical"},
	})
	if err != nil {
		t.Fatal(err)
	}
	missing := "missing write key: send it as the user of Authorization: Basic, as Authorization: Bearer, or in X-Sluice-Key"
	tests := []struct {
		name       string
		kr         *keyring
		presented  string
		want       keyMatch
		wantStatus int
		wantErr    string
	}{
		{name: "web", kr: kr, presented: webKey, want: keyMatch{Source: "web"}},
		{name: "ios with class", kr: kr, presented: iosKey, want: keyMatch{Source: "ios", Class: "critical"}},
		{name: "missing", kr: kr, wantStatus: 401, wantErr: missing},
		{name: "unknown", kr: kr, presented: webKey + "x", wantStatus: 401, wantErr: "unknown write key"},
		{name: "prefix of a key", kr: kr, presented: webKey[:10], wantStatus: 401, wantErr: "unknown write key"},
		{name: "case matters", kr: kr, presented: strings.ToUpper(webKey), wantStatus: 401, wantErr: "unknown write key"},
		{name: "too long", kr: kr, presented: strings.Repeat("k", maxKeyBytes+1), wantStatus: 401, wantErr: "unknown write key: longer than 1024 bytes"},
		{name: "no keys: open", kr: &keyring{}, presented: webKey},
		{name: "no keys, no key: open", kr: &keyring{}},
		{name: "nil keyring: open", kr: nil, presented: "anything"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, status, err := tt.kr.authorize(tt.presented)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || status != tt.wantStatus || got != (keyMatch{}) {
					t.Fatalf("got %+v, %d, %v; want %d %q", got, status, err, tt.wantStatus, tt.wantErr)
				}
				if tt.presented != "" && strings.Contains(err.Error(), tt.presented[:10]) {
					t.Fatalf("error %q repeats the key", err)
				}
				return
			}
			if err != nil || status != 0 || got != tt.want {
				t.Fatalf("got %+v, %d, %v; want %+v", got, status, err, tt.want)
			}
		})
	}
	if !kr.enabled() || (&keyring{}).enabled() || (*keyring)(nil).enabled() {
		t.Fatal("enabled")
	}
}

// TestKeyringFromHeaders runs the path a handler takes: header key, else
// body key, then authorize.
func TestKeyringFromHeaders(t *testing.T) {
	kr, err := newKeyring([]Key{{Key: webKey, Source: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name       string
		auth       string
		bodyKey    string
		wantSource string
		wantStatus int
	}{
		{name: "Segment Basic", auth: basic(webKey + ":"), wantSource: "web"},
		{name: "PostHog body key", bodyKey: webKey, wantSource: "web"},
		{name: "header wins over body", auth: "Bearer " + webKey, bodyKey: "other", wantSource: "web"},
		{name: "wrong header key, right body key", auth: "Bearer nope", bodyKey: webKey, wantStatus: 401},
		{name: "malformed Basic", auth: "Basic %%%", bodyKey: webKey, wantStatus: 401},
		{name: "nothing", wantStatus: 401},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.auth != "" {
				h.Set("Authorization", tt.auth)
			}
			key, err := presentedKey(h)
			status := 0
			var m keyMatch
			if err != nil {
				status = http.StatusUnauthorized
			} else {
				if key == "" {
					key = tt.bodyKey
				}
				m, status, err = kr.authorize(key)
			}
			if status != tt.wantStatus || m.Source != tt.wantSource {
				t.Fatalf("got %+v, %d, %v; want source %q, status %d", m, status, err, tt.wantSource, tt.wantStatus)
			}
			if err != nil && strings.Contains(err.Error(), webKey) {
				t.Fatalf("error %q repeats the key", err)
			}
		})
	}
}

func TestNewKeyringRefuses(t *testing.T) {
	secret := "s3cr3t-value-never-printed"
	tests := []struct {
		name    string
		keys    []Key
		wantErr string
	}{
		{name: "empty", keys: []Key{{Key: secret, Source: "a"}, {Key: "", Source: "b"}},
			wantErr: `write key 2 (source "b"): empty key`},
		{name: "duplicate", keys: []Key{{Key: secret, Source: "a"}, {Key: "other", Source: "b"}, {Key: secret, Source: "c"}},
			wantErr: `write key 3 (source "c"): same key as write key 1 (source "a")`},
		{name: "white space", keys: []Key{{Key: secret + " ", Source: "a"}},
			wantErr: `write key 1 (source "a"): key has leading or trailing white space`},
		{name: "control character", keys: []Key{{Key: secret + "\n" + secret, Source: "a"}},
			wantErr: `write key 1 (source "a"): key holds a control character`},
		{name: "too long", keys: []Key{{Key: strings.Repeat(secret, 100), Source: "a"}},
			wantErr: `write key 1 (source "a"): key of 2600 bytes, limit 1024`},
		{name: "bad class", keys: []Key{{Key: secret, Source: "a", Class: "no such/class"}},
			wantErr: `write key 1 (source "a"): invalid class "no such/class": want 1-64 bytes of [A-Za-z0-9_-], not "quarantine"`},
		{name: "every problem", keys: []Key{{Key: "", Source: "a"}, {Key: secret, Source: "b"}, {Key: secret, Source: "c"}},
			wantErr: "write key 1 (source \"a\"): empty key\nwrite key 3 (source \"c\"): same key as write key 2 (source \"b\")"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kr, err := newKeyring(tt.keys)
			if err == nil || err.Error() != tt.wantErr || kr != nil {
				t.Fatalf("got %v, %v; want %q", kr, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q contains the key", err)
			}
		})
	}
	if kr, err := newKeyring(nil); err != nil || kr.enabled() {
		t.Fatalf("no keys: %v, %v", kr, err)
	}
}

// TestKeyRedacted prints a Key every way a log line or an error might.
func TestKeyRedacted(t *testing.T) {
	k := Key{Key: webKey, Source: "web", Class: "critical"}
	type config struct {
		Keys []Key
		Main Key
		Ptr  *Key
	}
	c := config{Keys: []Key{k, k}, Main: k, Ptr: &k}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%X", "%10.3v", "%T %v"} {
		outs = append(outs, fmt.Sprintf(verb, k), fmt.Sprintf(verb, &k), fmt.Sprintf(verb, c), fmt.Sprintf(verb, []Key{k}))
	}
	outs = append(outs, k.String(), k.GoString(), fmt.Errorf("bad key %v", k).Error(), fmt.Sprint(k), fmt.Sprintln(c))
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(h(&b)).Info("keys", "key", k, "ptr", &k, "any", any(k))
		outs = append(outs, b.String())
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(js))
	for _, out := range outs {
		if strings.Contains(out, webKey) || strings.Contains(out, webKey[8:]) {
			t.Errorf("leaks the key: %s", out)
		}
	}
	for _, want := range []string{
		`Key{Source: "web", Class: "critical", Key: REDACTED}`,
		`ingest.Key{Source: "web", Class: "critical", Key: REDACTED}`,
		`"key":{"source":"web","class":"critical","key":"REDACTED"}`,
		`key.source=web key.class=critical key.key=REDACTED`,
		`{"Keys":[{"Key":"REDACTED","Source":"web","Class":"critical"}`,
	} {
		if !strings.Contains(strings.Join(outs, "\n"), want) {
			t.Errorf("no output has %s", want)
		}
	}
	if got := fmt.Sprint(Key{Source: "web"}); got != `Key{Source: "web", Class: "", Key: ""}` {
		t.Errorf("an empty key prints %s", got)
	}
}

// BenchmarkKeyringAuthorize measures a lookup among n keys:
//
//	go test ./ingest -run '^$' -bench KeyringAuthorize -benchmem
func BenchmarkKeyringAuthorize(b *testing.B) {
	for _, n := range []int{1, 10, 1000} {
		keys := make([]Key, n)
		for i := range keys {
			keys[i] = Key{Key: "wk_live_" + strconv.Itoa(1e9+i), Source: "s" + strconv.Itoa(i)}
		}
		kr, err := newKeyring(keys)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			last := keys[n-1].Key
			for b.Loop() {
				if _, _, err := kr.authorize(last); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzPresentedKey feeds any header values: no panic, a found key is
// non-empty, and an error is one of the fixed messages, so it can never
// repeat what the client sent.
func FuzzPresentedKey(f *testing.F) {
	for _, s := range []string{"", basic(webKey + ":"), basic(":" + webKey), basic(":"), "Basic !!", "Bearer " + webKey, "Bearer", webKey, "Basic YWI6"} {
		f.Add(s, "")
	}
	f.Add("Bearer x", iosKey)
	messages := map[string]bool{
		"malformed Authorization header: Basic without credentials":                        true,
		"malformed Authorization header: Basic credentials are not valid base64":           true,
		"malformed Authorization header: Basic credentials with neither user nor password": true,
		"malformed Authorization header: Bearer without a token":                           true,
		"unsupported Authorization scheme: use Basic or Bearer, or send X-Sluice-Key":      true,
	}
	f.Fuzz(func(t *testing.T, auth, xkey string) {
		h := http.Header{"Authorization": {auth}, "X-Sluice-Key": {xkey}}
		key, err := presentedKey(h)
		switch {
		case err != nil:
			if key != "" || !messages[err.Error()] {
				t.Fatalf("got %q, %q", key, err)
			}
		case xkey != "":
			if key != xkey {
				t.Fatalf("got %q, want the X-Sluice-Key %q", key, xkey)
			}
		case strings.TrimSpace(auth) == "":
			if key != "" {
				t.Fatalf("got %q from no header", key)
			}
		case key == "":
			t.Fatalf("no key and no error from %q", auth)
		}
	})
}

func TestNewKeyringPinWithoutClass(t *testing.T) {
	_, err := newKeyring([]Key{{Key: webKey, Source: "web", PinClass: true}})
	if err == nil || !strings.Contains(err.Error(), `write key 1 (source "web"): pinned to no class: set its class`) {
		t.Fatalf("err %v", err)
	}
}
