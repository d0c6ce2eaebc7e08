package plan

import (
	"errors"
	"fmt"
)

// ErrInvalidInventory is wrapped by every InputError: the inventory given to
// Evaluate cannot be planned as it is.
var ErrInvalidInventory = errors.New("plan: invalid inventory")

// InputError is one problem with one field of an Inventory. Evaluate
// returns every problem it finds, joined (errors.Join), each an
// *InputError, so that a caller that read the inventory from a file can
// point each at its line.
type InputError struct {
	// Path names the field as the inventory file does: "headroom",
	// "hops[0].bandwidth", "flows[2].hops[1]".
	Path string
	// Msg says what is wrong, in plain words, on one line.
	Msg string
}

func (e *InputError) Error() string { return fmt.Sprintf("plan: %s: %s", e.Path, e.Msg) }

// Unwrap returns ErrInvalidInventory.
func (e *InputError) Unwrap() error { return ErrInvalidInventory }
