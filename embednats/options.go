package embednats

import (
	"log/slog"
	"time"
)

// DefaultReadyTimeout is how long Start waits for the server to accept
// connections when Options.ReadyTimeout is zero.
const DefaultReadyTimeout = 10 * time.Second

// DefaultShutdownTimeout bounds Close.
const DefaultShutdownTimeout = 30 * time.Second

// Options configure an embedded server. Dir is required; the zero value of
// every other field is a working default.
type Options struct {
	// Dir is where JetStream stores its streams; created if missing.
	// Required.
	Dir string
	// Host is the client listen host. Default "127.0.0.1".
	Host string
	// Port is the client listen port. Default 0: a free port, as
	// net.Listen picks one (Server.ClientURL names it).
	Port int
	// NoListen opens no TCP listener at all: clients connect only
	// in-process, with Server.Connect. Default false.
	NoListen bool
	// ServerName names the server (in its logs and JetStream metadata).
	// Default "sluice-embedded".
	ServerName string
	// SyncAlways makes JetStream fsync every write before acknowledging
	// it, at a large cost in throughput. Default false: the server's own
	// default (fsync every 2 minutes; see the package's caveats).
	SyncAlways bool
	// MaxPayload is the largest message the server accepts, in bytes.
	// Default 0: the server's default, 1 MB.
	MaxPayload int32
	// ReadyTimeout bounds Start's wait for the server to accept
	// connections. Default DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Logger receives the server's log lines (notices at Info, warnings at
	// Warn, errors at Error; debug and trace are off). Nil discards.
	Logger *slog.Logger
}
