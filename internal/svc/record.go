// Package svc is the service catalogue kept in a group's reserved key
// namespace: the stored form of an instance, its keys, its validation, and
// the leader-side checker that probes instances and writes their status.
// It imports neither the root package nor dragonboat; the cluster engine
// gives the checker its reads and writes through the Store interface.
package svc

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/health"
)

// Key layout, all under fsm.ReservedPrefix:
//
//	"\x00svc/" + service + "/" + id   the instance Record (JSON)
//	"\x00hb/" + service + "/" + id    a ttl instance's heartbeat, attached
//	                                  to the lease that keeps it alive
//
// Names never contain "/", so a service's prefix holds its instances only.
const (
	InstancesPrefix  = fsm.ReservedPrefix + "svc/"
	HeartbeatsPrefix = fsm.ReservedPrefix + "hb/"
)

// InstanceKey is the key of one instance's record.
func InstanceKey(service, id string) string { return InstancesPrefix + service + "/" + id }

// ServicePrefix is the prefix of every instance of service.
func ServicePrefix(service string) string { return InstancesPrefix + service + "/" }

// HeartbeatKey is the key a ttl instance's lease keeps alive.
func HeartbeatKey(service, id string) string { return HeartbeatsPrefix + service + "/" + id }

// SplitKey returns the service and id of an instance or heartbeat key.
func SplitKey(key string) (service, id string, ok bool) {
	rest, found := strings.CutPrefix(key, InstancesPrefix)
	if !found {
		if rest, found = strings.CutPrefix(key, HeartbeatsPrefix); !found {
			return "", "", false
		}
	}
	service, id, ok = strings.Cut(rest, "/")
	return service, id, ok && service != "" && id != ""
}

// Status values as stored and shown.
const (
	Passing  = "passing"
	Warning  = "warning"
	Critical = "critical"
)

// OutputNotChecked is the output of an instance whose check has not run.
const OutputNotChecked = "not checked yet"

// TypeTTL is the check kind kept alive by heartbeats instead of probes;
// TypeNever marks an instance stored but never checked, so critical for
// good (dister v1.5's nodes of unknown types).
const (
	TypeTTL   = "ttl"
	TypeNever = "never"
)

// Check is an instance's health check as stored. Durations are in
// milliseconds in JSON so the stored form does not depend on Go's duration
// syntax.
type Check struct {
	Type                    string        `json:"type,omitempty"` // "" = no check: always passing
	Target                  string        `json:"target,omitempty"`
	Interval                time.Duration `json:"-"`
	Timeout                 time.Duration `json:"-"`
	TTL                     time.Duration `json:"-"`
	DeregisterCriticalAfter time.Duration `json:"-"`
}

type checkJSON struct {
	Type                      string `json:"type,omitempty"`
	Target                    string `json:"target,omitempty"`
	IntervalMs                int64  `json:"interval_ms,omitempty"`
	TimeoutMs                 int64  `json:"timeout_ms,omitempty"`
	TTLMs                     int64  `json:"ttl_ms,omitempty"`
	DeregisterCriticalAfterMs int64  `json:"deregister_critical_after_ms,omitempty"`
}

// MarshalJSON implements json.Marshaler.
func (c Check) MarshalJSON() ([]byte, error) {
	return json.Marshal(checkJSON{c.Type, c.Target, c.Interval.Milliseconds(), c.Timeout.Milliseconds(),
		c.TTL.Milliseconds(), c.DeregisterCriticalAfter.Milliseconds()})
}

// UnmarshalJSON implements json.Unmarshaler.
func (c *Check) UnmarshalJSON(b []byte) error {
	var j checkJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = Check{j.Type, j.Target, time.Duration(j.IntervalMs) * time.Millisecond,
		time.Duration(j.TimeoutMs) * time.Millisecond, time.Duration(j.TTLMs) * time.Millisecond,
		time.Duration(j.DeregisterCriticalAfterMs) * time.Millisecond}
	return nil
}

// Probe is the health package's view of c.
func (c Check) Probe() health.Check {
	return health.Check{Type: c.Type, Target: c.Target, Timeout: c.Timeout}
}

// Probed tells whether the checker probes c (ttl and "no check" are not
// probed; unknown legacy types are never checked at all).
func (c Check) Probed() bool {
	switch c.Type {
	case health.TypeHTTP, health.TypeWeb, health.TypeTCP, health.TypeMySQL, health.TypePgSQL,
		health.TypeScript, health.TypeCustom:
		return true
	}
	return false
}

// Record is one stored instance.
type Record struct {
	Service  string            `json:"service"`
	ID       string            `json:"id"`
	Address  string            `json:"address,omitempty"`
	Priority int               `json:"priority"`
	Tags     []string          `json:"tags,omitempty"`
	Meta     map[string]string `json:"meta,omitempty"`
	Check    Check             `json:"check"`

	// Written by the registrar (initial value) and then by the leader's
	// checker only.
	Status string `json:"status"`
	Output string `json:"output,omitempty"`
	// LastCheckedMs is when the current status was observed (Unix ms);
	// 0 = never checked.
	LastCheckedMs int64 `json:"last_checked_ms,omitempty"`

	// RegisteredMs is when the instance was last registered (Unix ms):
	// a registration starts DeregisterCriticalAfter's countdown over.
	RegisteredMs int64 `json:"registered_ms,omitempty"`

	// Lease keeps the heartbeat key of a ttl instance; 0 otherwise.
	Lease int64 `json:"lease,omitempty"`

	// Extra is opaque data a compatibility layer keeps with the instance
	// (the v1.5 REST API's node object, which may hold a password).
	Extra []byte `json:"extra,omitempty"`
}

// Encode is the stored form of r.
func (r *Record) Encode() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode instance %s/%s: %v: %w", errs.Cut(r.Service), errs.Cut(r.ID), err, errs.Invalid)
	}
	return b, nil
}

// Decode parses a stored record.
func Decode(b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("corrupt instance record: %v: %w", err, errs.Invalid)
	}
	return &r, nil
}

// LastChecked is LastCheckedMs as a time (zero when never checked).
func (r *Record) LastChecked() time.Time {
	if r.LastCheckedMs == 0 {
		return time.Time{}
	}
	return time.UnixMilli(r.LastCheckedMs)
}

// InitialStatus sets the status a newly registered instance starts with:
// no check and ttl (the registration is itself a heartbeat) pass; a probed
// check is critical until its first result, and a "never" check for good.
func (r *Record) InitialStatus(now time.Time) {
	switch {
	case r.Check.Type == "":
		r.Status, r.Output, r.LastCheckedMs = Passing, "", 0
	case r.Check.Type == TypeTTL:
		r.Status, r.Output, r.LastCheckedMs = Passing, "registered", now.UnixMilli()
	default:
		r.Status, r.Output, r.LastCheckedMs = Critical, OutputNotChecked, 0
	}
}

// SameCheck reports whether a and b would be checked the same way, so a
// re-registration can keep the status already known.
func SameCheck(a, b *Record) bool {
	return a.Check == b.Check && a.Address == b.Address
}
