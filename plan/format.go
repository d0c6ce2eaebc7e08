package plan

import (
	"math"
	"strconv"
)

// FormatBits formats bit/s with an SI prefix and four significant
// digits: "410 Mbit/s". Plan's warnings use it, as `sluice plan` does.
func FormatBits(bps float64) string {
	for _, u := range []struct {
		div  float64
		name string
	}{{1e9, "Gbit/s"}, {1e6, "Mbit/s"}, {1e3, "kbit/s"}} {
		if bps >= u.div {
			return strconv.FormatFloat(bps/u.div, 'g', 4, 64) + " " + u.name
		}
	}
	return strconv.FormatFloat(bps, 'g', 4, 64) + " bit/s"
}

// FormatBytes formats a size in binary units and four significant digits:
// "1000 B", "512 KiB".
func FormatBytes(n float64) string {
	switch {
	case n >= 1<<40:
		return strconv.FormatFloat(n/(1<<40), 'g', 4, 64) + " TiB"
	case n >= 1<<30:
		return strconv.FormatFloat(n/(1<<30), 'g', 4, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(n/(1<<20), 'g', 4, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(n/(1<<10), 'g', 4, 64) + " KiB"
	}
	return strconv.FormatFloat(n, 'g', 4, 64) + " B"
}

// FormatRate formats a rate per second: whole from 100 up, else four
// significant digits.
func FormatRate(r float64) string {
	if r >= 100 {
		return strconv.FormatFloat(math.Round(r), 'f', -1, 64)
	}
	return strconv.FormatFloat(r, 'g', 4, 64)
}
