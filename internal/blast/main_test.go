package blast

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if ServeIfChild() { // the NATS server child of Scenario.Run
		return
	}
	os.Exit(m.Run())
}
