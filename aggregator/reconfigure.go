package aggregator

import (
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
)

// Reconfigure changes the classes' settings while the node runs, as a
// config reload does: guaranteed rates, ceilings, priorities, weights,
// criticality, max ages and expiry, batch limits, field priorities and
// degradation plans. Nothing is lost or resent: a batch already cut keeps
// the settings it was cut with, the next one takes the new ones.
//
// The classes must be the configured ones, by name and in order. What the
// running node cannot change in place (compression, overflow policy, spool
// caps) must be unchanged; Reconfigure then returns an error wrapping
// ErrInvalidOptions that names each difference, and changes nothing, as
// it does for classes that fail priority.Validate.
func (n *Node) Reconfigure(classes []priority.Class) error {
	n.reconf.Lock()
	defer n.reconf.Unlock()
	cur := n.Classes()
	if len(classes) != len(cur) {
		return fmt.Errorf("%w: %d classes, the node runs %d (%s): adding or removing classes needs a restart",
			ErrInvalidOptions, len(classes), len(cur), n.classNames())
	}
	var errs []error
	for i := range classes {
		a, b := &cur[i], &classes[i]
		if a.Name != b.Name {
			errs = append(errs, fmt.Errorf("class %d is %q, the node runs %q: renaming or reordering classes needs a restart", i, b.Name, a.Name))
			continue
		}
		if a.Compression != b.Compression || a.CompressionMin != b.CompressionMin || a.CompressionMax != b.CompressionMax {
			errs = append(errs, fmt.Errorf("class %s: compression %q → %q needs a restart", a.Name, compressionString(a), compressionString(b)))
		}
		if a.Overflow != b.Overflow || a.MaxBytes != b.MaxBytes {
			errs = append(errs, fmt.Errorf("class %s: overflow policy and max_bytes need a restart", a.Name))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
	}
	if err := priority.Validate(classes, priority.Rate{BytesPerSec: n.opts.Link.Ceil}); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	cfgs := make([]*laneConfig, len(classes))
	for i, c := range classes {
		var err error
		if cfgs[i], err = newLaneConfig(c); err != nil {
			return fmt.Errorf("%w: class %s: %w", ErrInvalidOptions, c.Name, err)
		}
	}
	// The lanes of classes found only in the spool (drained with the last
	// class's settings) keep theirs.
	all := make([]priority.Class, len(n.lanes))
	for i, l := range n.lanes {
		all[i] = l.cfg.Load().class
		if i < len(classes) {
			all[i] = classes[i]
		}
	}
	if err := n.drv.setClasses(all); err != nil {
		return fmt.Errorf("aggregator: reconfigure: %w", err)
	}
	for i, cfg := range cfgs {
		n.lanes[i].cfg.Store(cfg)
		n.lanes[i].notify() // a shorter linger or a lifted deferral applies now
	}
	return nil
}

// Classes returns the classes the node accepts, with their current
// settings.
func (n *Node) Classes() []priority.Class {
	out := make([]priority.Class, 0, len(n.byName))
	for _, l := range n.lanes {
		if n.byName[l.name] == l {
			out = append(out, l.cfg.Load().class)
		}
	}
	return out
}

// compressionString is c's compression as config says it: a level, or
// auto with its bounds.
func compressionString(c *priority.Class) string {
	lo, hi := shaper.CompressBounds(c)
	if lo == hi && c.Compression != "" && c.Compression != priority.CompressionAuto {
		return c.Compression
	}
	return fmt.Sprintf("auto %s..%s", lo, hi)
}
