package spool

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrInUse is returned by Check when another process (a running node) holds
// the spool's lock.
var ErrInUse = errors.New("spool is in use by another process")

// What a node does with a damaged file (Damage.Action).
const (
	// ActionQuarantine: Open moves the file to quarantine/. A sealed
	// segment's unacknowledged events are dropped (counted under
	// "quarantine"); a lost tail makes seqs skip ahead so none is reused.
	ActionQuarantine = "quarantine"
	// ActionQuarantineOnRead: a segment that passes Open's check but holds
	// a damaged record (Open checks a sealed segment's first and last
	// records, and every record of the tail, which it then seals behind a
	// new tail). Its events up to the damage are served; when Read reaches
	// the damage the file is quarantined and the rest dropped.
	ActionQuarantineOnRead = "quarantine_on_read"
	// ActionReadError was reported for a tail holding a damaged record,
	// which Read refused with ErrCorrupt until the tail was sealed.
	//
	// Deprecated: Open now seals such a tail, which Check reports as
	// ActionQuarantineOnRead.
	ActionReadError = "read_error"
	// ActionRebuild: meta.db is damaged or missing; Open quarantines it and
	// starts an empty one. Cursor progress is lost: acknowledged ranges above
	// each class's oldest segment are read (and sent) again.
	ActionRebuild = "rebuild"
	// ActionNewID: the ID file is damaged or missing; Open makes a new id.
	// Batches re-sent after that carry new message ids, which upstream
	// cannot deduplicate against earlier sends.
	ActionNewID = "new_id"
	// ActionSkipClaims: malformed claim entries in a segment are skipped (and
	// logged); the ranges they covered may be cut again and sent twice.
	ActionSkipClaims = "skip_claims"
)

// Report is what Check found in a spool directory.
type Report struct {
	Dir         string        `json:"dir"`
	ID          string        `json:"id"`          // the spool's id; "" if the ID file is damaged
	Bytes       int64         `json:"bytes"`       // disk bytes of every class's segment files
	Classes     []ClassReport `json:"classes"`     // by name
	Damaged     []Damage      `json:"damaged"`     // by file
	Quarantined []Quarantined `json:"quarantined"` // files in quarantine/, by name
}

// OK reports whether nothing is damaged. Files already in quarantine/ do
// not count: the node moved them aside and goes on without them.
func (r *Report) OK() bool { return len(r.Damaged) == 0 }

// ClassReport describes one class as the next Open will find it.
type ClassReport struct {
	Name     string  `json:"name"`
	Segments int     `json:"segments"` // segment files, damaged ones included
	Bytes    int64   `json:"bytes"`    // disk bytes of those files
	First    uint64  `json:"first"`    // first seq stored in a readable segment; 0 if none
	Last     uint64  `json:"last"`     // last seq stored in a readable segment; 0 if none
	Acked    uint64  `json:"acked"`    // the contiguous ack cursor Open starts from
	Pending  uint64  `json:"pending"`  // events above Acked the node will read and send
	Lost     uint64  `json:"lost"`     // events in damaged files not acknowledged (as meta.db records) that the node drops; a lost tail's are not known
	Claims   []Range `json:"claims"`   // claimed batches not fully acknowledged: republished as they are after a start
	Damaged  int     `json:"damaged"`  // damaged segment files
}

// Damage is one damaged file and what the node does with it.
type Damage struct {
	Class  string `json:"class,omitempty"` // "" for meta.db and ID
	File   string `json:"file"`            // path relative to the spool directory
	Bytes  int64  `json:"bytes"`
	Reason string `json:"reason"`
	Action string `json:"action"` // one of the Action constants
	// Seqs is the range the node gives up (Len 0 if none, or Last 0 if
	// its end is not known: a lost tail).
	Seqs   Range  `json:"seqs"`
	Effect string `json:"effect"` // Action spelled out for this file
}

// Quarantined is a file in dir/quarantine/.
type Quarantined struct {
	File     string    `json:"file"`            // name in quarantine/
	Class    string    `json:"class,omitempty"` // "" for meta.db
	Original string    `json:"original"`        // its name before the move
	Bytes    int64     `json:"bytes"`
	Time     time.Time `json:"time"` // when it was moved; zero if the name does not say
}

// Check inspects the spool in dir without changing anything: every file is
// opened read-only, and the shared lock it takes on meta.db fails with
// ErrInUse within about a second if a running node holds the spool.
//
// It runs the checks Open runs (and so predicts what Open quarantines) and
// then verifies every record of every segment, which Open does not: it
// reads the whole spool, so it takes as long as reading the backlog from
// disk. A dir without meta.db, ID or class directories is not a spool: the
// error wraps os.ErrNotExist.
func Check(dir string) (*Report, error) {
	rep := &Report{Dir: dir, Classes: []ClassReport{}, Damaged: []Damage{}, Quarantined: []Quarantined{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: check %s: %w", dir, err)
	}
	names := map[string]bool{}
	hasID := false
	for _, e := range ents {
		if e.IsDir() && ValidClass(e.Name()) {
			names[e.Name()] = true
		}
		hasID = hasID || e.Name() == "ID"
	}
	metas, err := checkMeta(dir, rep, hasID || len(names) > 0)
	if err != nil {
		return nil, err
	}
	checkID(dir, rep)
	for name := range metas {
		names[name] = true
	}
	sorted := make([]string, 0, len(names))
	for name := range names {
		sorted = append(sorted, name)
	}
	slices.Sort(sorted)
	for _, name := range sorted {
		cr, err := checkClass(dir, name, metas[name], rep)
		if err != nil {
			return nil, err
		}
		rep.Bytes += cr.Bytes
		rep.Classes = append(rep.Classes, cr)
	}
	if err := listQuarantine(dir, rep); err != nil {
		return nil, err
	}
	slices.SortFunc(rep.Damaged, func(a, b Damage) int { return cmp.Compare(a.File, b.File) })
	return rep, nil
}

// readOnlyOptions open a bbolt file without writing to it, under a shared
// lock that a writer's exclusive lock refuses.
func readOnlyOptions() *bolt.Options {
	return &bolt.Options{ReadOnly: true, Timeout: lockTimeout}
}

// inUse turns a lock timeout into ErrInUse.
func inUse(dir string, err error) error {
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("spool: check %s: %w", dir, ErrInUse)
	}
	return nil
}

// checkMeta loads meta.db as Open would, recording its damage. isSpool says
// whether the directory holds other parts of a spool.
func checkMeta(dir string, rep *Report, isSpool bool) (map[string]*metaClass, error) {
	path := filepath.Join(dir, "meta.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if !isSpool {
			return nil, fmt.Errorf("spool: check %s: no spool here (no meta.db): %w", dir, os.ErrNotExist)
		}
		rep.Damaged = append(rep.Damaged, Damage{File: "meta.db", Reason: "missing", Action: ActionRebuild,
			Effect: "an empty meta.db is made at start: acknowledged ranges above each class's oldest segment are sent again"})
		return map[string]*metaClass{}, nil
	}
	db, err := openBolt(path, readOnlyOptions())
	if err := inUse(dir, err); err != nil {
		return nil, err
	}
	var m map[string]*metaClass
	if err == nil {
		m, err = (&Spool{meta: db}).loadMeta()
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		return m, nil
	}
	if !isCorruption(err) {
		return nil, fmt.Errorf("spool: check %s: meta.db: %w", dir, err)
	}
	rep.Damaged = append(rep.Damaged, Damage{File: "meta.db", Bytes: fileSize(path), Reason: err.Error(), Action: ActionRebuild,
		Effect: "moved to quarantine/ and rebuilt empty at start: acknowledged ranges above each class's oldest segment are sent again"})
	return map[string]*metaClass{}, nil
}

// checkID checks the ID file as loadID reads it.
func checkID(dir string, rep *Report) {
	b, err := os.ReadFile(filepath.Join(dir, "ID"))
	reason := ""
	switch {
	case errors.Is(err, os.ErrNotExist):
		reason = "missing"
	case err != nil:
		reason = err.Error()
	case len(b) != 32:
		reason = fmt.Sprintf("%d bytes, want 32 hex digits", len(b))
	default:
		if _, herr := hex.DecodeString(string(b)); herr != nil {
			reason = "not hex"
		} else {
			rep.ID = string(b)
			return
		}
	}
	rep.Damaged = append(rep.Damaged, Damage{File: "ID", Reason: reason, Action: ActionNewID,
		Effect: "a new spool id is made at start: batches sent again carry new message ids, which upstream cannot deduplicate"})
}

// checkedSeg is one segment file of a class as Check found it.
type checkedSeg struct {
	first, last uint64 // last: last seq stored; first-1 if empty
	path        string
	size        int64
	open        error  // Open's check failed: quarantined at start
	badSeq      uint64 // first seq not verified by the full scan; 0 if all good
	bad         error
	claims      []Range
	badClaims   int
}

// checkClass checks every segment of a class and derives what Open will
// start from, as recoverClass does.
func checkClass(dir, name string, mc *metaClass, rep *Report) (ClassReport, error) {
	if mc == nil {
		mc = &metaClass{}
	}
	cr := ClassReport{Name: name, Claims: []Range{}}
	cdir := filepath.Join(dir, name)
	ents, err := os.ReadDir(cdir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return cr, fmt.Errorf("spool: check %s: %w", cdir, err)
	}
	var segs []*checkedSeg
	for _, e := range ents {
		if first, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			path := filepath.Join(cdir, e.Name())
			segs = append(segs, &checkedSeg{first: first, path: path, size: fileSize(path)})
		}
	}
	slices.SortFunc(segs, func(a, b *checkedSeg) int { return cmp.Compare(a.first, b.first) })
	for _, sg := range segs {
		if err := checkSegFile(dir, name, sg); err != nil {
			return cr, err
		}
		cr.Segments++
		cr.Bytes += sg.size
	}

	// The cursor and the span Open derives (see recoverClass).
	var healthy []*checkedSeg
	for _, sg := range segs {
		if sg.open == nil {
			healthy = append(healthy, sg)
		}
	}
	tailLost := len(segs) > 0 && segs[len(segs)-1].open != nil
	next := uint64(1)
	if len(healthy) > 0 {
		next = healthy[len(healthy)-1].last + 1
	}
	next = max(next, mc.cursor+1)
	cursor := min(mc.cursor, next-1)
	if len(healthy) > 0 {
		cursor = max(cursor, healthy[0].first-1)
		cr.First = healthy[0].first
		cr.Last = healthy[len(healthy)-1].last
	}
	cr.Acked = cursor
	live := func(r Range) uint64 {
		r.First = max(r.First, cursor+1)
		return r.Len()
	}
	// Lost events are counted above the persisted cursor: Open's cursor
	// starts at the oldest readable segment, past a damaged one before it.
	lost := func(r Range) uint64 {
		r.First = max(r.First, mc.cursor+1)
		return r.Len()
	}

	claims := map[uint64]uint64{}
	for _, r := range mc.claims {
		claims[r.First] = r.Last
	}
	for i, sg := range segs {
		rel, _ := filepath.Rel(dir, sg.path)
		tail := i == len(segs)-1
		upper := sg.last // the highest seq the segment can hold
		if !tail {
			upper = segs[i+1].first - 1
		}
		d := Damage{Class: name, File: rel, Bytes: sg.size}
		switch {
		case sg.open != nil && tail:
			d.Reason, d.Action, d.Seqs = sg.open.Error(), ActionQuarantine, Range{sg.first, 0}
			d.Effect = "moved to quarantine/ at start; the events in it are lost (how many is not known) and seqs skip ahead so none is reused"
		case sg.open != nil:
			d.Reason, d.Action, d.Seqs = sg.open.Error(), ActionQuarantine, Range{sg.first, upper}
			n := lost(d.Seqs)
			cr.Lost += n
			d.Effect = fmt.Sprintf("moved to quarantine/ at start; seqs %d-%d are dropped (%d not acknowledged)", sg.first, upper, n)
		case sg.bad != nil:
			d.Reason, d.Seqs = sg.bad.Error(), Range{sg.badSeq, upper}
			n := lost(d.Seqs)
			cr.Lost += n
			served := "no event is served"
			if sg.badSeq > sg.first {
				served = fmt.Sprintf("seqs %d-%d are served", sg.first, sg.badSeq-1)
			}
			d.Action = ActionQuarantineOnRead
			d.Effect = fmt.Sprintf("%s; when a read reaches seq %d the file is moved to quarantine/ and seqs %d-%d are dropped (%d not acknowledged)",
				served, sg.badSeq, sg.badSeq, upper, n)
			if tail {
				d.Effect = fmt.Sprintf("sealed at start, new events go to a new segment; %s", d.Effect)
			}
		}
		if d.Action != "" {
			cr.Damaged++
			rep.Damaged = append(rep.Damaged, d)
		}
		if sg.badClaims > 0 {
			rep.Damaged = append(rep.Damaged, Damage{Class: name, File: rel, Bytes: sg.size, Action: ActionSkipClaims,
				Reason: fmt.Sprintf("%d malformed claims: %v", sg.badClaims, ErrCorrupt),
				Effect: "skipped at start: the ranges they covered may be cut again and sent twice"})
		}
		if sg.open != nil {
			continue
		}
		good := sg.last
		if sg.bad != nil {
			good = sg.badSeq - 1
		}
		cr.Pending += live(Range{sg.first, good})
		for _, r := range sg.claims {
			claims[r.First] = r.Last
		}
	}
	for first, last := range claims {
		r := Range{first, last}
		if r.Last > cursor && (tailLost || r.Last < next) {
			cr.Claims = append(cr.Claims, r)
		}
	}
	slices.SortFunc(cr.Claims, func(a, b Range) int { return cmp.Compare(a.First, b.First) })
	return cr, nil
}

// checkSegFile runs Open's check on a segment file and, if it passes, the
// full scan. Damage is recorded in sg; an error means the check could not
// be done (lock held, permissions).
func checkSegFile(dir, class string, sg *checkedSeg) error {
	db, err := openBolt(sg.path, readOnlyOptions())
	if err := inUse(dir, err); err != nil {
		return err
	}
	if err != nil {
		if !isCorruption(err) {
			return fmt.Errorf("spool: check %s: %w", sg.path, err)
		}
		sg.open = err
		return nil
	}
	defer db.Close()
	if sg.last, sg.claims, sg.badClaims, err = checkSegment(db, class, sg.first); err != nil {
		sg.open = err
		return nil
	}
	sg.badSeq, sg.bad = scanSegment(db, sg.first, sg.last, 0)
	return nil
}

// scanSegment verifies every record of a segment that passed checkSegment:
// keys contiguous from first to last, each record's CRC and framing. It
// returns the first seq it could not verify and why, or 0 and nil. With
// maxBytes > 0 it stops, finding nothing, once it has verified that many
// bytes of records.
func scanSegment(db *bolt.DB, first, last uint64, maxBytes int64) (bad uint64, err error) {
	want, scanned := first, int64(0)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			bad, err = want, fmt.Errorf("bbolt panic at seq %d: %v: %w", want, r, ErrCorrupt)
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		c, err := newRecCursor(tx)
		if err != nil {
			return err
		}
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 || binary.BigEndian.Uint64(k) != want {
				return fmt.Errorf("record key %x, want seq %d: %w", k, want, ErrCorrupt)
			}
			rec, err := parseRecord(v)
			if err != nil {
				return fmt.Errorf("record at seq %d: %w", want, err)
			}
			want += rec.count
			if scanned += int64(len(v)); maxBytes > 0 && scanned >= maxBytes {
				return nil
			}
		}
		if c.err != nil {
			return c.err
		}
		if want != last+1 {
			return fmt.Errorf("records end at seq %d, want %d: %w", want-1, last, ErrCorrupt)
		}
		return nil
	})
	if err != nil {
		return want, err
	}
	return 0, nil
}

// listQuarantine lists dir/quarantine/, whose names quarantine makes as
// [<class>.]<file>.<UTC time>.
func listQuarantine(dir string, rep *Report) error {
	qdir := filepath.Join(dir, quarantineDir)
	ents, err := os.ReadDir(qdir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool: check %s: %w", qdir, err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		q := Quarantined{File: e.Name(), Original: e.Name(), Bytes: fileSize(filepath.Join(qdir, e.Name()))}
		if i := strings.LastIndex(e.Name(), ".db."); i >= 0 {
			q.Original = e.Name()[:i+3]
			q.Time, _ = time.Parse("20060102T150405.000000000", e.Name()[i+4:])
		}
		if class, file, ok := strings.Cut(q.Original, "."); ok && ValidClass(class) && strings.HasPrefix(file, "seg-") {
			q.Class, q.Original = class, file
		}
		rep.Quarantined = append(rep.Quarantined, q)
	}
	return nil
}
