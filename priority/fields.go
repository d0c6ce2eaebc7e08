package priority

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// FieldRule gives a JSON field a priority. Higher is more important; a
// DropFields action removes fields whose priority is below its
// MinFieldPriority. Note the direction is the opposite of Class.Priority.
//
// Path is a dot-separated path of object keys from the event's top level:
// "context.userAgent" matches that key exactly (and its whole value);
// "context.page.*" matches every member of the object at context.page (the
// object itself stays, emptied). Paths never descend into arrays, keys
// containing '.' cannot be named, and '*' is only valid as the whole last
// segment after at least one key.
type FieldRule struct {
	Path     string
	Priority int
}

// ValidatePath checks one field path.
func ValidatePath(path string) error {
	if path == "" {
		return fmt.Errorf("%w: empty path", ErrInvalidPath)
	}
	segs := strings.Split(path, ".")
	for i, s := range segs {
		switch {
		case s == "":
			return fmt.Errorf("%w: %q: empty segment", ErrInvalidPath, path)
		case s == "*" && i != len(segs)-1:
			return fmt.Errorf("%w: %q: '*' only as the last segment", ErrInvalidPath, path)
		case s == "*" && i == 0:
			return fmt.Errorf("%w: %q: '*' needs a parent key", ErrInvalidPath, path)
		case s != "*" && strings.Contains(s, "*"):
			return fmt.Errorf("%w: %q: '*' must be a whole segment", ErrInvalidPath, path)
		}
	}
	return nil
}

// FieldSet is a compiled list of field rules. It is immutable and safe for
// concurrent use.
type FieldSet struct {
	rules []FieldRule // sorted by priority, then path
	// levels[i] drops every rule with priority ≤ prios[i].
	prios  []int
	levels []*Paths
}

// NewFieldSet compiles rules. Duplicate paths keep the lowest priority.
func NewFieldSet(rules []FieldRule) (*FieldSet, error) {
	byPath := make(map[string]int, len(rules))
	for _, r := range rules {
		if err := ValidatePath(r.Path); err != nil {
			return nil, err
		}
		if p, ok := byPath[r.Path]; !ok || r.Priority < p {
			byPath[r.Path] = r.Priority
		}
	}
	fs := &FieldSet{rules: make([]FieldRule, 0, len(byPath))}
	for p, pr := range byPath {
		fs.rules = append(fs.rules, FieldRule{Path: p, Priority: pr})
	}
	sort.Slice(fs.rules, func(i, j int) bool {
		a, b := fs.rules[i], fs.rules[j]
		if a.Priority != b.Priority {
			return a.Priority < b.Priority
		}
		return a.Path < b.Path
	})
	for i, r := range fs.rules {
		if i+1 < len(fs.rules) && fs.rules[i+1].Priority == r.Priority {
			continue
		}
		paths := make([]string, 0, i+1)
		for _, q := range fs.rules[:i+1] {
			paths = append(paths, q.Path)
		}
		ps, err := CompilePaths(paths)
		if err != nil {
			return nil, err
		}
		fs.prios = append(fs.prios, r.Priority)
		fs.levels = append(fs.levels, ps)
	}
	return fs, nil
}

// Rules returns the compiled rules sorted by priority then path.
func (fs *FieldSet) Rules() []FieldRule { return slices.Clone(fs.rules) }

// Below returns the paths of fields whose priority is < minPriority, or nil
// when there are none. The result is shared and immutable.
func (fs *FieldSet) Below(minPriority int) *Paths {
	if fs == nil {
		return nil
	}
	// largest i with prios[i] < minPriority
	i := sort.SearchInts(fs.prios, minPriority) - 1
	if i < 0 {
		return nil
	}
	return fs.levels[i]
}

// Paths is a compiled set of JSON paths to remove, for DropFields. It is
// immutable and safe for concurrent use.
type Paths struct {
	root     *pathNode
	patterns []string // the paths as given, sorted
}

type pathNode struct {
	children map[string]*pathNode
	// names and nodes list children too when they are few: comparing a
	// handful of names is cheaper than hashing each member's key.
	names   []string
	nodes   []*pathNode
	drop    int // 1 + index into patterns when this exact key is dropped
	dropAll int // 1 + index into patterns when every child is dropped (".*")
}

// maxListed is the most children a pathNode finds by comparing names.
const maxListed = 8

// child returns the child named key, or nil.
func (n *pathNode) child(key []byte) *pathNode {
	if n.names == nil {
		return n.children[string(key)]
	}
	for i, name := range n.names {
		if name == string(key) {
			return n.nodes[i]
		}
	}
	return nil
}

// CompilePaths compiles field paths for DropFields.
func CompilePaths(paths []string) (*Paths, error) {
	ps := &Paths{root: &pathNode{}, patterns: slices.Clone(paths)}
	slices.Sort(ps.patterns)
	ps.patterns = slices.Compact(ps.patterns)
	for i, p := range ps.patterns {
		if err := ValidatePath(p); err != nil {
			return nil, err
		}
		n := ps.root
		segs := strings.Split(p, ".")
		for j, s := range segs {
			if s == "*" {
				n.dropAll = i + 1
				break
			}
			if n.children == nil {
				n.children = make(map[string]*pathNode)
			}
			c := n.children[s]
			if c == nil {
				c = &pathNode{}
				n.children[s] = c
			}
			n = c
			if j == len(segs)-1 {
				n.drop = i + 1
			}
		}
	}
	ps.root.list()
	return ps, nil
}

// list fills names and nodes below n wherever there are few children.
func (n *pathNode) list() {
	for name, c := range n.children {
		if len(n.children) <= maxListed {
			n.names = append(n.names, name)
			n.nodes = append(n.nodes, c)
		}
		c.list()
	}
}

// Patterns returns the compiled paths, sorted.
func (p *Paths) Patterns() []string {
	if p == nil {
		return nil
	}
	return slices.Clone(p.patterns)
}

// Len returns the number of paths.
func (p *Paths) Len() int {
	if p == nil {
		return 0
	}
	return len(p.patterns)
}
