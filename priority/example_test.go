package priority_test

import (
	"fmt"

	"github.com/sluicehq/sluice/priority"
)

func ExampleDropFields() {
	fs, err := priority.NewFieldSet(priority.DefaultFieldRules())
	if err != nil {
		panic(err)
	}
	event := []byte(`{"type":"page","context":{"ip":"10.0.0.1","userAgent":"curl/8","page":{"url":"/x"}},"properties":{"debug":{"trace":1},"path":"/x"}}`)
	// ingest at level 2 drops fields with priority < 20
	out, dropped, err := priority.DropFields(nil, event, fs.Below(20))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(out))
	fmt.Println(dropped)
	// Output:
	// {"type":"page","context":{"ip":"10.0.0.1","page":{"url":"/x"}},"properties":{"path":"/x"}}
	// [context.userAgent properties.debug]
}

func ExampleRouter() {
	classes := priority.Defaults(2_500_000) // a 20 Mbit/s link
	r, err := priority.NewRouter(classes, []priority.Rule{
		{Field: "event", Equals: []string{"Order Completed"}, Class: priority.ClassCritical},
		{Source: "replica", Class: priority.ClassReplication},
	}, priority.ClassIngest)
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Route("segment", []byte(`{"type":"track","event":"Order Completed"}`)))
	fmt.Println(r.Route("replica", []byte(`{"type":"track"}`)))
	fmt.Println(r.Route("http", []byte(`{"type":"page"}`)))
	// Output:
	// critical
	// replication
	// ingest
}

func ExampleValidate() {
	classes := priority.Defaults(1_000_000)
	classes[3].Rate.BytesPerSec = 600_000 // backfill asks for a guarantee
	fmt.Println(priority.Validate(classes, priority.Rate{BytesPerSec: 1_000_000}))
	// Output:
	// priority: invalid class: sum of rates 1200000 bytes/s > link ceil 1000000 bytes/s
	// priority: invalid class: critical class "critical": ceil bytes/s 400000 + others' rates 1100000 > link ceil 1000000
}
