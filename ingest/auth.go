package ingest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/spool"
)

// Key is a write key: the secret a producer presents to send events, and
// what it stands for. Keys are configured per source; a request presents
// one in a header or in its body (see presentedKey).
//
// A Key never shows its secret: String, GoString, Format (every fmt verb),
// LogValue and MarshalJSON print "REDACTED" in its place, so a Key, a
// []Key or a struct holding one can go into a log line or an error.
// Reading k.Key itself is the only way to the secret.
type Key struct {
	// Key is the secret, 1 to 1024 bytes without control characters or
	// surrounding white space. Send it as the user of
	// Authorization: Basic (Segment, RudderStack), as a Bearer token, in
	// X-Sluice-Key, or in the body where the format has a place for it
	// (Segment "writeKey", PostHog "api_key").
	Key string
	// Source names the producer the key belongs to: it scopes event ids
	// for dedup and labels the request's counters. Optional.
	Source string
	// Class is the traffic class of the key's events when the request names
	// none (?class=, X-Sluice-Class): it comes before the routing rules,
	// after the request. "" leaves the class to the request and the rules.
	// Optional; when set, a valid class name (spool.ValidClass).
	Class string
	// PinClass makes Class the class of every event sent with the key:
	// the routing rules are not asked, and a request that names another
	// class gets 403. A key handed to browsers and phones should be pinned,
	// or anyone who holds it can send into critical. Needs Class.
	PinClass bool
}

// redacted stands in for a secret wherever a Key is printed.
const redacted = "REDACTED"

// maxKeyBytes bounds a write key, configured or presented, in bytes. A
// longer presented key is refused without being hashed.
const maxKeyBytes = 1024

// authChallenge is the WWW-Authenticate value of a 401 (RFC 9110 section
// 11.6.1): Segment and RudderStack clients send the key as the Basic user.
const authChallenge = `Basic realm="sluice"`

// String returns the key with its secret redacted:
// Key{Source: "web", Class: "", Key: REDACTED}.
func (k Key) String() string {
	secret := redacted
	if k.Key == "" {
		secret = `""` // nothing to hide, and it explains an "empty key" error
	}
	return fmt.Sprintf("Key{Source: %q, Class: %q, Key: %s}", k.Source, k.Class, secret)
}

// GoString is String, for %#v.
func (k Key) GoString() string { return "ingest." + k.String() }

// Format prints String for every verb, so that no verb (%d, %x, %+v…)
// reaches the fields.
func (k Key) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, k.GoString())
		return
	}
	io.WriteString(f, k.String())
}

// LogValue logs the key as a group of source, class and a redacted key.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("source", k.Source),
		slog.String("class", k.Class),
		slog.String("key", redacted),
	)
}

// MarshalJSON encodes the key with its secret redacted, so that a
// configuration dump does not leak it. It does not round-trip.
func (k Key) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct{ Key, Source, Class string }{redacted, k.Source, k.Class})
}

// keyMatch is what a presented key was found to stand for.
type keyMatch struct {
	Source string
	Class  string
	Pin    bool // Class is the class of every event (Key.PinClass)
}

// keyring holds the configured write keys by their SHA-256 digest.
//
// Lookup hashes the presented key and compares the digest with every
// configured digest using crypto/subtle.ConstantTimeCompare, without
// stopping at a match: its time depends on the number of keys and the
// length of the presented key (the client's own), never on the value of a
// configured key or how much of one the presented key matches. Looking
// the digest up in a map would be O(1) but leak, through the map's early
// exits, how many leading bytes of a digest matched, which lets a client
// learn a key's digest byte by byte and then guess a weak key offline.
// The scan costs tens of nanoseconds a key (BenchmarkKeyringAuthorize:
// 0.2 µs for 1 key, 40 to 60 µs for 1,000 on a busy 2-vCPU EPYC VM).
//
// The zero keyring, and a nil one, have no keys: they let every request
// through.
type keyring struct {
	keys []keyEntry
}

type keyEntry struct {
	digest [sha256.Size]byte
	match  keyMatch
}

// newKeyring returns the keyring of keys. It refuses, naming each by its
// position and source but never by its text, a key that is empty, longer
// than maxKeyBytes, surrounded by white space or holding a control
// character (no client could send it in a header), a key given twice, and
// an invalid class.
func newKeyring(keys []Key) (*keyring, error) {
	kr := &keyring{keys: make([]keyEntry, 0, len(keys))}
	seen := make(map[[sha256.Size]byte]int, len(keys))
	var errs []error
	for i, k := range keys {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("write key %d (source %q): %s", i+1, k.Source, fmt.Sprintf(format, args...)))
		}
		switch {
		case k.Key == "":
			bad("empty key")
			continue
		case len(k.Key) > maxKeyBytes:
			bad("key of %d bytes, limit %d", len(k.Key), maxKeyBytes)
			continue
		case strings.TrimSpace(k.Key) != k.Key:
			bad("key has leading or trailing white space")
			continue
		case strings.ContainsFunc(k.Key, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			bad("key holds a control character")
			continue
		}
		if k.Class != "" && !spool.ValidClass(k.Class) {
			bad("invalid class %q: want 1-64 bytes of [A-Za-z0-9_-], not \"quarantine\"", k.Class)
		}
		if k.PinClass && k.Class == "" {
			bad("pinned to no class: set its class")
		}
		d := sha256.Sum256([]byte(k.Key))
		if j, ok := seen[d]; ok {
			bad("same key as write key %d (source %q)", j+1, keys[j].Source)
			continue
		}
		seen[d] = i
		kr.keys = append(kr.keys, keyEntry{digest: d, match: keyMatch{Source: k.Source, Class: k.Class, Pin: k.PinClass}})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return kr, nil
}

// enabled reports whether kr has keys, so requests must present one.
func (kr *keyring) enabled() bool { return kr != nil && len(kr.keys) > 0 }

// authorize finds what the presented key stands for. With no keys
// configured every request passes, with a zero keyMatch. Else a missing or
// unknown key answers 401: the caller sets WWW-Authenticate:
// authChallenge. The messages never contain the presented key.
func (kr *keyring) authorize(presented string) (keyMatch, int, error) {
	if !kr.enabled() {
		return keyMatch{}, 0, nil
	}
	if presented == "" {
		return keyMatch{}, http.StatusUnauthorized, errors.New("missing write key: send it as the user of Authorization: Basic, as Authorization: Bearer, or in X-Sluice-Key")
	}
	if len(presented) > maxKeyBytes {
		return keyMatch{}, http.StatusUnauthorized, fmt.Errorf("unknown write key: longer than %d bytes", maxKeyBytes)
	}
	d := sha256.Sum256([]byte(presented))
	found := 0 // index + 1
	for i := range kr.keys {
		eq := subtle.ConstantTimeCompare(d[:], kr.keys[i].digest[:])
		found = subtle.ConstantTimeSelect(eq, i+1, found)
	}
	if found == 0 {
		return keyMatch{}, http.StatusUnauthorized, errors.New("unknown write key")
	}
	return kr.keys[found-1].match, 0, nil
}

// presentedKey returns the write key in a request's headers, "" if none:
//
//	X-Sluice-Key: <key>
//	Authorization: Basic base64(<key>:)    the user is the key (Segment, RudderStack);
//	Authorization: Basic base64(:<key>)    if the user is empty, the password
//	Authorization: Bearer <key>
//
// X-Sluice-Key wins over Authorization, which a proxy may have set for
// itself; the scheme names are case-insensitive, base64 padding is
// optional, and Basic credentials without a colon are all user. A request
// without a key in its headers may carry one in its body (Segment
// "writeKey", PostHog "api_key"): the caller authorizes that one instead.
//
// An Authorization header that is malformed or of another scheme, when
// there is no X-Sluice-Key, is an error (answer 401); its message never
// repeats the header.
func presentedKey(h http.Header) (string, error) {
	if k := h.Get("X-Sluice-Key"); k != "" {
		return k, nil
	}
	auth := strings.TrimSpace(h.Get("Authorization"))
	if auth == "" {
		return "", nil
	}
	scheme, cred, _ := strings.Cut(auth, " ")
	cred = strings.TrimSpace(cred)
	switch {
	case strings.EqualFold(scheme, "Basic"):
		if cred == "" {
			return "", errors.New("malformed Authorization header: Basic without credentials")
		}
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			if raw, err = base64.RawStdEncoding.DecodeString(cred); err != nil {
				return "", errors.New("malformed Authorization header: Basic credentials are not valid base64")
			}
		}
		user, pass, _ := strings.Cut(string(raw), ":")
		if user != "" {
			return user, nil
		}
		if pass != "" {
			return pass, nil
		}
		return "", errors.New("malformed Authorization header: Basic credentials with neither user nor password")
	case strings.EqualFold(scheme, "Bearer"):
		if cred == "" {
			return "", errors.New("malformed Authorization header: Bearer without a token")
		}
		return cred, nil
	}
	// The "scheme" may be a bare key: do not repeat it.
	return "", errors.New("unsupported Authorization scheme: use Basic or Bearer, or send X-Sluice-Key")
}
