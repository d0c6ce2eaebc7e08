package connlimit

import "errors"

// ErrInvalidOptions is returned (wrapped) by New for a nil inner listener
// or a negative Max, PerIP, Reserve or EvictAfter.
var ErrInvalidOptions = errors.New("connlimit: invalid options")
