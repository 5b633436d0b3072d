package standalone

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dister/dister"
)

// Service routes of /v1:
//
//	PUT    /v1/services/{name}/instances/{id}            register or replace
//	                                                     an instance (body below)
//	                                                     -> the instance as stored
//	DELETE /v1/services/{name}/instances/{id}            {"deregistered":true};
//	                                                     404 not_found if absent
//	PUT    /v1/services/{name}/instances/{id}/heartbeat  {"service","id"}: a ttl
//	                                                     instance lives another TTL;
//	                                                     404 not_found, 400 invalid
//	                                                     if its check is not ttl
//	GET    /v1/services                                  {"services":[{"name","instances","passing"}]}
//	GET    /v1/services/{name}                           {"service":name,"instances":[...]};
//	                                                     ?passing=true keeps the passing ones
//
// The reads take ?consistency= and ?min_revision= as the KV reads do. The
// body of a registration:
//
//	{"address":"10.0.0.5:8080", "priority":3, "tags":["a"], "meta":{"k":"v"},
//	 "check":{"type":"http", "target":"http://10.0.0.5:8080/health",
//	          "interval":"1s", "timeout":"500ms", "ttl":"10s",
//	          "deregister_critical_after":"1m"}}
//
// Durations are Go duration strings. Check types: http, web, tcp, mysql,
// pgsql, script, custom, ttl, never; without "check" the instance has no
// check and always passes. The name and id come from the path; a body
// "service" or "id" must repeat them. Unknown fields (also the read-only
// ones of the answer: status, output, last_checked, mod_revision) are 400
// invalid. A ttl instance registered here is kept alive by heartbeats alone
// (dister.ExternalHeartbeat): the daemon is not the application's process.
//
// An instance reads back as
//
//	{"service","id","address","priority","tags":[],"meta":{},
//	 "check":{"type","target","interval","timeout","ttl","deregister_critical_after"},
//	 "status":"passing|warning|critical","output","last_checked","mod_revision"}
//
// where check is absent for an instance without one, zero durations and an
// empty target, output or last_checked (RFC 3339, never checked) are
// omitted. Secrets never come back: passwords in mysql and pgsql targets
// and in URLs (targets and addresses) read as "xxxxx", and the opaque
// Instance.Extra of the legacy API is not shown.

// instanceJSON is an instance as /v1 shows it.
type instanceJSON struct {
	Service     string            `json:"service"`
	ID          string            `json:"id"`
	Address     string            `json:"address"`
	Priority    int               `json:"priority"`
	Tags        []string          `json:"tags"`
	Meta        map[string]string `json:"meta"`
	Check       *checkJSON        `json:"check,omitempty"`
	Status      string            `json:"status,omitempty"`
	Output      string            `json:"output,omitempty"`
	LastChecked string            `json:"last_checked,omitempty"`
	ModRevision int64             `json:"mod_revision"`
}

// checkJSON is a check, in registrations and answers alike.
type checkJSON struct {
	Type                    string `json:"type"`
	Target                  string `json:"target,omitempty"`
	Interval                string `json:"interval,omitempty"`
	Timeout                 string `json:"timeout,omitempty"`
	TTL                     string `json:"ttl,omitempty"`
	DeregisterCriticalAfter string `json:"deregister_critical_after,omitempty"`
}

// registerJSON is the body of PUT /v1/services/{name}/instances/{id}.
type registerJSON struct {
	Service  *string           `json:"service"`
	ID       *string           `json:"id"`
	Address  string            `json:"address"`
	Priority int               `json:"priority"`
	Tags     []string          `json:"tags"`
	Meta     map[string]string `json:"meta"`
	Check    *checkJSON        `json:"check"`
}

type serviceInfoJSON struct {
	Name      string `json:"name"`
	Instances int    `json:"instances"`
	Passing   int    `json:"passing"`
}

type serviceJSON struct {
	Service   string         `json:"service"`
	Instances []instanceJSON `json:"instances"`
}

// services is the service registry of the selected group.
func (s *Server) services(c *gin.Context) *dister.Services {
	return s.node.Group(c.GetString(keyGroup)).Services()
}

// toInstanceJSON is the /v1 form of an instance: never a password, never
// Extra.
func toInstanceJSON(raw *dister.Instance) instanceJSON {
	red := raw.Redacted()
	in := &red
	out := instanceJSON{Service: in.Service, ID: in.ID, Address: in.Address, Priority: in.Priority,
		Tags: in.Tags, Meta: in.Meta, Status: string(in.Status), Output: in.Output, ModRevision: in.ModRevision}
	if out.Tags == nil {
		out.Tags = []string{}
	}
	if out.Meta == nil {
		out.Meta = map[string]string{}
	}
	if !in.LastChecked.IsZero() {
		out.LastChecked = in.LastChecked.UTC().Format(time.RFC3339Nano)
	}
	if ch := in.Check; ch != (dister.Check{}) {
		out.Check = &checkJSON{Type: string(ch.Type), Target: ch.Target,
			Interval: durationString(ch.Interval), Timeout: durationString(ch.Timeout), TTL: durationString(ch.TTL),
			DeregisterCriticalAfter: durationString(ch.DeregisterCriticalAfter)}
	}
	return out
}

// durationString is d as a Go duration, "" for zero.
func durationString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// parseDuration reads an optional duration field ("" = zero).
func parseDuration(field, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, invalidf("%s %q: want a Go duration such as \"10s\"", field, v)
	}
	return d, nil
}

// toInstance checks the body against the path and builds the instance;
// the SDK validates the rest.
func (in *registerJSON) toInstance(service, id string) (dister.Instance, error) {
	if in.Service != nil && *in.Service != service {
		return dister.Instance{}, invalidf("body service %q differs from the path's %q", *in.Service, service)
	}
	if in.ID != nil && *in.ID != id {
		return dister.Instance{}, invalidf("body id %q differs from the path's %q", *in.ID, id)
	}
	inst := dister.Instance{Service: service, ID: id, Address: in.Address, Priority: in.Priority,
		Tags: in.Tags, Meta: in.Meta}
	if ch := in.Check; ch != nil {
		var err error
		inst.Check.Type, inst.Check.Target = dister.CheckType(ch.Type), ch.Target
		for _, d := range []struct {
			field, v string
			to       *time.Duration
		}{
			{"check.interval", ch.Interval, &inst.Check.Interval},
			{"check.timeout", ch.Timeout, &inst.Check.Timeout},
			{"check.ttl", ch.TTL, &inst.Check.TTL},
			{"check.deregister_critical_after", ch.DeregisterCriticalAfter, &inst.Check.DeregisterCriticalAfter},
		} {
			if *d.to, err = parseDuration(d.field, d.v); err != nil {
				return dister.Instance{}, err
			}
		}
	}
	return inst, nil
}

func (s *Server) registerInstance(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	service, id := c.Param("name"), c.Param("id")
	var in registerJSON
	if err := readJSON(c, &in); err != nil {
		s.fail(c, err)
		return
	}
	inst, err := in.toInstance(service, id)
	if err != nil {
		s.fail(c, err)
		return
	}
	if (inst.Check.Type == dister.CheckScript || inst.Check.Type == dister.CheckCustom) && !mayRunCommands(c) {
		s.failCode(c, http.StatusForbidden, codeForbidden, msgCommandsNeedAdmin)
		return
	}
	ctx := c.Request.Context()
	svcs := s.services(c)
	if err := svcs.Register(ctx, inst, dister.ExternalHeartbeat()); err != nil {
		s.fail(c, err)
		return
	}
	// Read it back (a session read sees the write) to show what is stored:
	// the defaults filled in and the status. Should that read fail, the
	// registration still succeeded: answer with what was registered.
	out := toInstanceJSON(&inst)
	if stored, ok := s.storedInstance(ctx, svcs, service, id); ok {
		out = toInstanceJSON(&stored)
	}
	s.reply(c, http.StatusOK, out, noRevision)
}

// storedInstance reads one instance; false if it cannot be read or is gone.
func (s *Server) storedInstance(ctx context.Context, svcs *dister.Services, service, id string) (dister.Instance, bool) {
	insts, err := svcs.Get(ctx, service)
	if err != nil {
		s.opts.Logger.Debug("reading a registered instance back", "service", service, "id", id, "err", err)
		return dister.Instance{}, false
	}
	for _, in := range insts {
		if in.ID == id {
			return in, true
		}
	}
	return dister.Instance{}, false
}

func (s *Server) deregisterInstance(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	if err := s.services(c).Deregister(c.Request.Context(), c.Param("name"), c.Param("id")); err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, map[string]bool{"deregistered": true}, noRevision)
}

func (s *Server) heartbeatInstance(c *gin.Context) {
	if err := params(c); err != nil {
		s.fail(c, err)
		return
	}
	service, id := c.Param("name"), c.Param("id")
	if err := s.services(c).Heartbeat(c.Request.Context(), service, id); err != nil {
		s.fail(c, err)
		return
	}
	s.reply(c, http.StatusOK, map[string]string{"service": service, "id": id}, noRevision)
}

func (s *Server) listServices(c *gin.Context) {
	if err := params(c, "consistency", "min_revision"); err != nil {
		s.fail(c, err)
		return
	}
	ropts, err := readOptions(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	infos, err := s.services(c).List(c.Request.Context(), dister.WithRead(ropts...))
	if err != nil {
		s.fail(c, err)
		return
	}
	out := make([]serviceInfoJSON, len(infos))
	for i, si := range infos {
		out[i] = serviceInfoJSON{Name: si.Name, Instances: si.Instances, Passing: si.Passing}
	}
	s.reply(c, http.StatusOK, map[string][]serviceInfoJSON{"services": out}, noRevision)
}

func (s *Server) getService(c *gin.Context) {
	if err := params(c, "passing", "consistency", "min_revision"); err != nil {
		s.fail(c, err)
		return
	}
	passing, err := boolParam(c, "passing")
	if err != nil {
		s.fail(c, err)
		return
	}
	ropts, err := readOptions(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	qopts := []dister.QueryOption{dister.WithRead(ropts...)}
	if passing {
		qopts = append(qopts, dister.Passing())
	}
	name := c.Param("name")
	insts, err := s.services(c).Get(c.Request.Context(), name, qopts...)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := serviceJSON{Service: name, Instances: make([]instanceJSON, len(insts))}
	for i := range insts {
		out.Instances[i] = toInstanceJSON(&insts[i])
	}
	s.reply(c, http.StatusOK, out, noRevision)
}

// groupExists resolves the selected group within the request timeout:
// ErrGroupNotFound for an unknown one. Routes whose SDK call would wait
// for an unknown group (or start work for it) ask first.
func (s *Server) groupExists(c *gin.Context) error {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.opts.RequestTimeout)
	defer cancel()
	if _, err := s.kv(c).Revision(ctx, dister.Stale()); err != nil {
		return fmt.Errorf("group %q: %w", c.GetString(keyGroup), err)
	}
	return nil
}
