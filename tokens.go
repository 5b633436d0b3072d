package dister

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dister/dister/internal/errs"
)

// Access is what a bearer token may do. Each level includes the ones below
// it: AccessWrite can read, AccessAdmin can read and write.
type Access int

const (
	// AccessRead: gets, lists, watches, picks, metrics and status.
	AccessRead Access = iota + 1
	// AccessWrite: AccessRead plus puts, deletes, transactions, leases and
	// service registration.
	AccessWrite
	// AccessAdmin: AccessWrite plus groups, members, settings and snapshots.
	AccessAdmin
)

func (a Access) String() string {
	switch a {
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	case AccessAdmin:
		return "admin"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

// ParseAccess reads "read", "write" or "admin" (ErrInvalid otherwise).
func ParseAccess(s string) (Access, error) {
	switch strings.ToLower(s) {
	case "read":
		return AccessRead, nil
	case "write":
		return AccessWrite, nil
	case "admin":
		return AccessAdmin, nil
	}
	return 0, fmt.Errorf("role %q: want read, write or admin: %w", s, errs.Invalid)
}

// Grant is what one token allows.
type Grant struct {
	Access Access
	// Groups limits the token to these groups; empty = every group and the
	// cluster-wide operations (members, settings, snapshots, status).
	Groups []string
}

// Allows reports whether g may do an operation that needs need on group.
// group "" names a cluster-wide operation, which only a token limited to
// no group may do.
func (g Grant) Allows(need Access, group string) bool {
	if g.Access < need {
		return false
	}
	if len(g.Groups) == 0 {
		return true
	}
	if group == "" {
		return false
	}
	for _, x := range g.Groups {
		if x == group {
			return true
		}
	}
	return false
}

// Limited reports whether g is limited to some groups.
func (g Grant) Limited() bool { return len(g.Groups) > 0 }

// tokenReloadEvery bounds how often Lookup looks at the token file.
const tokenReloadEvery = time.Second

// Tokens is a set of bearer tokens with their grants, for the REST API
// (standalone.Options.Tokens) and the peer API (Options.Tokens). It is safe
// for concurrent use. Tokens are kept by their SHA-256 and compared in
// constant time; no method logs or returns a token.
//
// Loaded from a file, the set follows the file: a Lookup at least a second
// after the last one rereads it when its content changed. A file that no
// longer parses (or cannot be read) leaves the previous set in force and
// is logged once; one whose last line has no newline yet (perhaps being
// written) is taken once seen unchanged a second later. No goroutine is
// involved, so there is nothing to close.
type Tokens struct {
	extra  tokenTable
	path   string
	logger *slog.Logger

	cur atomic.Pointer[tokenTable]

	mu        sync.Mutex // held while rereading the file
	nextCheck atomic.Int64
	sum       [sha256.Size]byte // of the content in force
	badSum    [sha256.Size]byte // of the last content refused, logged once
	unended   [sha256.Size]byte // of the last content seen with its last line unended
}

type tokenEntry struct {
	sum   [sha256.Size]byte
	grant Grant
}

// tokenTable is keyed by the token's SHA-256: looking a token up reveals
// nothing about the stored tokens through timing, and the match is
// confirmed with a constant-time compare.
type tokenTable map[[sha256.Size]byte]tokenEntry

// LoadTokens makes a token set from the file at path (empty = no file)
// plus the tokens of extra (the daemon's --token as an admin token). The
// file has one token a line, "ROLE TOKEN [GROUP,GROUP...]", ROLE being
// read, write or admin; blank lines and lines starting with # are
// ignored. A file that cannot be read or parsed is an error (ErrInvalid
// for its content); so is an empty set. logger reports reloads (nil =
// slog.Default()).
func LoadTokens(path string, extra map[string]Grant, logger *slog.Logger) (*Tokens, error) {
	if logger == nil {
		logger = slog.Default()
	}
	t := &Tokens{extra: tokenTable{}, path: path, logger: logger}
	for tok, g := range extra {
		if err := t.extra.add(tok, g); err != nil {
			return nil, err
		}
	}
	table := tokenTable{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		if table, err = parseTokens(data); err != nil {
			return nil, fmt.Errorf("token file %s: %w", path, err)
		}
		t.sum = sha256.Sum256(data)
		t.nextCheck.Store(time.Now().Add(tokenReloadEvery).UnixNano())
	}
	if len(table)+len(t.extra) == 0 {
		return nil, fmt.Errorf("token set: no token given: %w", errs.Invalid)
	}
	t.cur.Store(&table)
	return t, nil
}

func (tt tokenTable) add(tok string, g Grant) error {
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return fmt.Errorf("a token must be non-empty and without white space: %w", errs.Invalid)
	}
	if g.Access < AccessRead || g.Access > AccessAdmin {
		return fmt.Errorf("token grant: %v is not a role: %w", g.Access, errs.Invalid)
	}
	sum := sha256.Sum256([]byte(tok))
	if _, dup := tt[sum]; dup {
		return fmt.Errorf("a token is listed twice: %w", errs.Invalid)
	}
	tt[sum] = tokenEntry{sum: sum, grant: g}
	return nil
}

// parseTokens reads the token file format. Errors name the line, never
// the token.
func parseTokens(data []byte) (tokenTable, error) {
	tt := tokenTable{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("line %d: want ROLE TOKEN [GROUP,GROUP...]: %w", n, errs.Invalid)
		}
		a, err := ParseAccess(f[0])
		if err != nil {
			// Not quoted: with the fields swapped it would be the token.
			return nil, fmt.Errorf("line %d: the first field is not a role (read, write or admin): %w", n, errs.Invalid)
		}
		g := Grant{Access: a}
		if len(f) == 3 {
			for _, name := range strings.Split(f[2], ",") {
				if name == "" {
					return nil, fmt.Errorf("line %d: empty group name in %q: %w", n, f[2], errs.Invalid)
				}
				g.Groups = append(g.Groups, name)
			}
		}
		if err := tt.add(f[1], g); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%v: %w", err, errs.Invalid)
	}
	return tt, nil
}

// Lookup returns the grant of token; false for an empty or unknown token.
func (t *Tokens) Lookup(token string) (Grant, bool) {
	if t == nil || token == "" {
		return Grant{}, false
	}
	t.maybeReload()
	sum := sha256.Sum256([]byte(token))
	for _, tt := range []tokenTable{*t.cur.Load(), t.extra} {
		if e, ok := tt[sum]; ok && subtle.ConstantTimeCompare(e.sum[:], sum[:]) == 1 {
			return e.grant, true
		}
	}
	return Grant{}, false
}

// Authorize is Lookup followed by Grant.Allows: nil when token may do an
// operation needing need on group ("" = cluster-wide), else an error
// matching ErrForbidden.
func (t *Tokens) Authorize(token string, need Access, group string) error {
	g, ok := t.Lookup(token)
	switch {
	case !ok && token == "":
		return fmt.Errorf("no token given: %w", errs.Forbidden)
	case !ok:
		return fmt.Errorf("unknown token: %w", errs.Forbidden)
	case g.Access < need:
		return fmt.Errorf("a %v token may not do what needs %v: %w", g.Access, need, errs.Forbidden)
	case !g.Allows(need, group) && group == "":
		return fmt.Errorf("a token limited to groups may not do a cluster-wide operation: %w", errs.Forbidden)
	case !g.Allows(need, group):
		return fmt.Errorf("the token is not for group %q: %w", group, errs.Forbidden)
	}
	return nil
}

// maybeReload rereads the file when a check is due. One caller rereads;
// the others go on with the set in force.
func (t *Tokens) maybeReload() {
	if t.path == "" || time.Now().UnixNano() < t.nextCheck.Load() || !t.mu.TryLock() {
		return
	}
	defer t.mu.Unlock()
	t.nextCheck.Store(time.Now().Add(tokenReloadEvery).UnixNano())
	data, err := os.ReadFile(t.path)
	if err != nil {
		sum := sha256.Sum256([]byte(err.Error()))
		if sum != t.badSum {
			t.badSum = sum
			t.logger.Error("token file unreadable; keeping the tokens in force", "path", t.path, "err", err)
		}
		return
	}
	sum := sha256.Sum256(data)
	if sum == t.sum {
		return
	}
	// A last line without its newline may be a line being written: cut
	// before its groups, it would read as a token for every group. Such a
	// file is taken only once it is seen unchanged at the next look.
	if len(data) > 0 && data[len(data)-1] != '\n' && sum != t.unended {
		t.unended = sum
		return
	}
	table, err := parseTokens(data)
	if err == nil && len(table)+len(t.extra) == 0 {
		err = fmt.Errorf("no token left: %w", errs.Invalid)
	}
	if err != nil {
		if sum != t.badSum {
			t.badSum = sum
			t.logger.Error("token file refused; keeping the tokens in force", "path", t.path, "err", err)
		}
		return
	}
	t.sum, t.badSum = sum, [sha256.Size]byte{}
	t.cur.Store(&table)
	t.logger.Info("token file reloaded", "path", t.path, "tokens", len(table))
}
