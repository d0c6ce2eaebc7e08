package blast

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// DataDir returns the directory of the shared real event data: the
// SLUICE_DATA environment variable if set, else ../shared/data beside the
// repository, or "" if neither exists.
func DataDir() string {
	if d := os.Getenv("SLUICE_DATA"); d != "" {
		return d
	}
	for _, d := range []string{"../../shared/data", "../shared/data"} {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			abs, _ := filepath.Abs(d)
			return abs
		}
	}
	return ""
}

// SDKEvents returns the events that four real tracking SDKs (Segment,
// RudderStack, Snowplow, PostHog) put on the wire for the same 10,000 web
// requests, interleaved, about 650 bytes each; or, without the data
// directory, n synthetic events of the same shape. The second result says
// which.
func SDKEvents(n int) ([][]byte, string, error) {
	dir := DataDir()
	if dir == "" {
		return Synthetic(n, 1), "synthetic", nil
	}
	var all [][][]byte
	for _, f := range []string{"segment", "rudderstack", "snowplow", "posthog"} {
		evs, err := readNDJSON(filepath.Join(dir, "sdk_wire_from_apache", f+".events.ndjson"))
		if err != nil {
			return nil, "", err
		}
		all = append(all, evs)
	}
	var out [][]byte
	for i := 0; len(out) < n; i++ {
		src := all[i%len(all)]
		out = append(out, src[(i/len(all))%len(src)])
	}
	return out, "sdk_wire_from_apache (real SDK events)", nil
}

// ReadNDJSON returns the non-empty lines of the NDJSON file at path.
func ReadNDJSON(path string) ([][]byte, error) { return readNDJSON(path) }

func readNDJSON(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
			out = append(out, bytes.Clone(line))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

var (
	pages  = []string{"/", "/pricing", "/docs/install", "/blog/2026/11/edge-shaping", "/signup", "/product/sluice", "/checkout", "/account/settings"}
	agents = []string{
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
	}
)

// Synthetic returns n Segment-shaped page events of about 700 bytes, from a
// fixed seed so runs are comparable.
func Synthetic(n int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	out := make([][]byte, n)
	for i := range out {
		page := pages[r.IntN(len(pages))]
		out[i] = fmt.Appendf(nil, `{"type":"page","messageId":"msg-%016x","anonymousId":"%032x","timestamp":"2026-11-25T%02d:%02d:%02d.%03dZ","name":%q,"properties":{"url":"https://example.com%s","path":%q,"referrer":"https://www.example.org/search?q=%x","title":"Example %s","search":""},"context":{"ip":"203.0.113.%d","userAgent":%q,"library":{"name":"analytics-node","version":"3.1.0"},"locale":"en-US","page":{"path":%q}},"integrations":{},"writeKey":"wk_%08x"}`,
			r.Uint64(), r.Uint64(), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1000), page, page, page,
			r.Uint32(), page, r.IntN(255), agents[r.IntN(len(agents))], page, r.Uint32()%16)
	}
	return out
}
