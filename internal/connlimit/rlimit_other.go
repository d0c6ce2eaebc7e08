//go:build !unix

package connlimit

// softNoFile reports that the limit is unknown.
func softNoFile() (uint64, bool) { return 0, false }
