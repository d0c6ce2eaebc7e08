package main

import (
	"os"
	"testing"

	"github.com/sluicehq/sluice/internal/blast"
)

// envMain makes the test binary act as the sluice binary, so the kill -9
// test can run `sluice run` as a subprocess without a separate build.
const envMain = "SLUICE_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if blast.ServeIfChild() { // sluice bench's NATS server child
		os.Exit(0)
	}
	if os.Getenv(envMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
