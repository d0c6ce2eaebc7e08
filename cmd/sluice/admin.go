package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// adminConfig is the "admin" section: the listener of the node's admin
// actions (POST /-/reload), apart from the producers on listen, as
// Envoy's admin.address. Changing it needs a restart.
type adminConfig struct {
	// Listen is a TCP address (127.0.0.1:9090) or "unix:" and the path of
	// a Unix socket, created with mode 0600 and removed on shutdown.
	// Default "": no admin listener (reload with SIGHUP).
	Listen string `yaml:"listen"`
	// TokenFile is a file holding a token, trimmed of surrounding white
	// space, that every admin request must present as "Authorization:
	// Bearer TOKEN". Read at start and on every reload. Default "": no
	// token, allowed only on a loopback address or a Unix socket.
	TokenFile string `yaml:"token_file"`
}

// unixSocket returns the socket path of a "unix:" listen address.
func (c adminConfig) unixSocket() (string, bool) {
	return strings.CutPrefix(c.Listen, "unix:")
}

// maxSocketPath returns the longest Unix socket path the kernel takes:
// sun_path (108 bytes on Linux, 104 on the BSDs and macOS) less its NUL.
func maxSocketPath() int {
	if runtime.GOOS == "linux" {
		return 107
	}
	return 103
}

// check validates c, given the ingest listen address; errors name the key.
func (c adminConfig) check(listen string) (key string, err error) {
	if c.Listen == "" {
		if c.TokenFile != "" {
			return "admin.token_file", errors.New("set without admin.listen: there is no admin listener to protect")
		}
		return "", nil
	}
	if path, ok := c.unixSocket(); ok {
		switch {
		case path == "":
			return "admin.listen", errors.New(`"unix:" without a path: want unix:/path/to/admin.sock`)
		case len(path) > maxSocketPath():
			return "admin.listen", fmt.Errorf("socket path of %d bytes; the limit is %d", len(path), maxSocketPath())
		}
		return "", nil
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "admin.listen", fmt.Errorf("%q: want host:port (127.0.0.1:9090) or unix:/path/to/admin.sock", c.Listen)
	}
	if p, err := net.LookupPort("tcp", port); err != nil || p < 0 || p > 65535 {
		return "admin.listen", fmt.Errorf("%q: bad port %q", c.Listen, port)
	}
	if c.Listen == listen && port != "0" {
		return "admin.listen", fmt.Errorf("%q is also listen: the admin listener needs an address of its own", c.Listen)
	}
	ip := net.ParseIP(host)
	if c.TokenFile == "" && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "admin.listen", fmt.Errorf("%q is not a loopback address: set admin.token_file, or listen on 127.0.0.1 or a Unix socket", c.Listen)
	}
	return "", nil
}

// token reads the token of c; nil without token_file.
func (c adminConfig) token() ([]byte, error) {
	if c.TokenFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return nil, err
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case tok == "":
		return nil, fmt.Errorf("%s holds no token", c.TokenFile)
	case strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return nil, fmt.Errorf("%s: the token holds white space or a control character, which no Authorization header can carry", c.TokenFile)
	}
	return []byte(tok), nil
}

// adminServer serves the admin actions on admin.listen: POST /-/reload,
// to clients that are not browsers and that present the token if one is
// set.
type adminServer struct {
	ln     net.Listener
	srv    *http.Server
	reload func() error
	log    *slog.Logger
	// digest is the SHA-256 of the token; nil: no token needed. Compared
	// in constant time, as digests, so its length does not show either.
	digest atomic.Pointer[[sha256.Size]byte]

	sock     string      // the Unix socket's path, or ""
	sockInfo os.FileInfo // the socket file made, to remove only that one
	once     sync.Once
}

// listenAdmin opens c's listener. A Unix socket is made with mode 0600;
// a stale socket left by a crash is replaced, a live one or any other file
// refused.
func listenAdmin(c adminConfig, token []byte, reload func() error, log *slog.Logger) (*adminServer, error) {
	a := &adminServer{reload: reload, log: log}
	a.setToken(token)
	path, unix := c.unixSocket()
	if !unix {
		ln, err := net.Listen("tcp", c.Listen)
		if err != nil {
			return nil, fmt.Errorf("admin.listen: %w", err)
		}
		a.ln = ln
	} else {
		if fi, err := os.Lstat(path); err == nil {
			if fi.Mode().Type() != os.ModeSocket {
				return nil, fmt.Errorf("admin.listen: %s exists and is not a socket", path)
			}
			if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
				conn.Close()
				return nil, fmt.Errorf("admin.listen: %s is in use by another process", path)
			}
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("admin.listen: stale socket: %w", err)
			}
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("admin.listen: %w", err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false) // removed by close, if still ours
		fi, err := os.Lstat(path)
		if err == nil {
			err = os.Chmod(path, 0o600)
		}
		if err != nil {
			ln.Close()
			os.Remove(path)
			return nil, fmt.Errorf("admin.listen: %w", err)
		}
		a.ln, a.sock, a.sockInfo = ln, path, fi
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /-/reload", a.serveReload)
	mux.HandleFunc("/-/reload", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", "POST")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed: use POST"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found: the admin listener serves POST /-/reload"})
	})
	a.srv = &http.Server{
		Handler:           a.guard(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute, // a reload reads key and certificate files
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return a, nil
}

// addr is where a listens.
func (a *adminServer) addr() net.Addr { return a.ln.Addr() }

// serve serves until close; it returns nil after close.
func (a *adminServer) serve() error {
	if err := a.srv.Serve(a.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// close stops a, waiting up to ctx for requests in flight (a reload), and
// removes its socket. Idempotent.
func (a *adminServer) close(ctx context.Context) {
	a.once.Do(func() {
		if err := a.srv.Shutdown(ctx); err != nil {
			a.log.Warn("admin shutdown", "err", err)
		}
		a.ln.Close() // when serve never ran
		if a.sock != "" {
			if fi, err := os.Lstat(a.sock); err == nil && os.SameFile(fi, a.sockInfo) {
				os.Remove(a.sock)
			}
		}
	})
}

// setToken replaces the token; nil: none needed.
func (a *adminServer) setToken(token []byte) {
	if token == nil {
		a.digest.Store(nil)
		return
	}
	d := sha256.Sum256(token)
	a.digest.Store(&d)
}

// guard refuses browsers (an admin client is curl or a script; a page
// that makes the browser post here, or rebinds a name to 127.0.0.1, is an
// attack) and requests without the token.
func (a *adminServer) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "" {
			a.log.Warn("admin request refused", "reason", "from a browser", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden: the admin listener does not serve browsers"})
			return
		}
		if want := a.digest.Load(); want != nil {
			scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
			got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				a.log.Warn("admin request refused", "reason", "missing or wrong token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
				w.Header().Set("WWW-Authenticate", `Bearer realm="sluice admin"`)
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized: send Authorization: Bearer with the token of admin.token_file"})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// serveReload answers POST /-/reload: the config file is re-read and
// applied (reloader.reload), 200 or 400 with why not.
func (a *adminServer) serveReload(w http.ResponseWriter, _ *http.Request) {
	if err := a.reload(); err != nil {
		a.log.Error("config reload refused", "err", err)
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"reloaded": true})
}

// reloadElsewhere answers /-/reload on the ingest listener, which serves
// no admin action: producers reach it.
func reloadElsewhere(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusNotFound, map[string]string{
		"error": "not found: reload is served on the admin listener (admin.listen), or send SIGHUP",
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
