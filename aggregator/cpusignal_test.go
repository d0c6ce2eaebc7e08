package aggregator

import (
	"testing"
	"time"
)

// The sampler reads the runtime's scheduling latencies and times a real
// loopback round trip; close stops the echo and may be called twice.
func TestCPUSampler(t *testing.T) {
	s := newCPUSampler(time.Second, true)
	defer s.close()
	if len(s.samples) == 0 {
		t.Fatal("no scheduling-latency metric in this runtime")
	}
	if s.ln == nil {
		t.Skip("no loopback interface")
	}
	var st = s.sampleAt(time.Now())
	for range 3 {
		st = s.sampleAt(time.Now())
	}
	if st.Loopback <= 0 || st.Loopback > time.Second {
		t.Errorf("loopback round trip %v, want within (0, 1 s]", st.Loopback)
	}
	if st.Delay < st.Loopback || st.Delay < 4*st.SchedP50 {
		t.Errorf("delay %v below its parts %+v", st.Delay, st)
	}
	s.close()
	s.close()
}
