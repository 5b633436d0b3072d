package standalone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-sql-driver/mysql"

	"github.com/dister/dister"
)

// The service routes of dister v1.5 (docs/legacy.md), over group "default":
//
//	GET    /service?name=N            data: N's ServiceConfig
//	                                  {"name":N,"type":T,"node":[{...},...]}
//	GET    /service                   data: {name: ServiceConfig} of every
//	                                  service, at most legacyMaxNodes nodes in all
//	POST   /service [ServiceConfig,...]  replace all nodes of the named
//	                                  services, in one write (PUT is POST)
//	DELETE /service ["name",...]      remove the services, in one write
//	GET    /balance?name=N            data: one alive node of N, picked at
//	                                  random weighted by priority
//
// Each node becomes an instance with id "node-0000", "node-0001", ... (so
// the id order is the node order) and the check its service's type asks
// for: web (url: GET, alive on 200), tcp (host, port: connect within 3 s
// or the interval), mysql and pgsql (host, port, user, pass, database:
// connect and ping), custom (script: run without a shell, alive if it
// prints 1; only while the script checks setting is on). Any other type is
// stored but never checked, so never balanced. Common fields: priority (an
// integer as a JSON string or number; a node without one is stored with
// priority 0 but never balanced to, as in v1.5) and interval (ms, string
// or number, default 2000, at least 100). port may be a string or a number.
//
// The node object is kept as posted, unknown fields and "pass" included
// (v1.5 echoed them), in the instance's Extra, together with the service's
// type; an incoming "status" is dropped. Reading a node adds "status": 1
// when its last check passed, 0 when it failed, none before the first
// check. Services registered through /v1 are shown too, their nodes built
// from the instance (id, address, priority) and their type being the
// check's.
//
// One write holds at most 128 operations: each service named in a POST or
// DELETE takes two and each node one, so a POST takes at most 63 services
// or 126 nodes. A POST naming a service twice keeps its last config.

// legacyMaxNodes is v1.5's limit on GET /service without a name.
const legacyMaxNodes = 1000

// Messages of v1.5, kept word for word.
const (
	msgServiceNotFound = "service not found"
	msgTooManyNodes    = "too large service size, need a service name to search"
	msgNameRequired    = "incomplete input: name is required"
	msgNoneAlive       = "no nodes of this service are alive"
)

// Node rules.
const (
	legacyDefaultIntervalMs = 2000
	legacyMinIntervalMs     = 100
	legacyMaxIntervalMs     = 24 * 60 * 60 * 1000
	legacyTCPTimeout        = 3 * time.Second
	// legacyMaxExtra is dister.Instance's bound on Extra.
	legacyMaxExtra = 64 << 10
)

// legacyServiceName is v1.5's rule for a service name.
var legacyServiceName = regexp.MustCompile(`^\w{1,128}$`)

// legacyServiceIn is a posted ServiceConfig; its nodes are read one by one.
type legacyServiceIn struct {
	Name string            `json:"name"`
	Type string            `json:"type"`
	Node []json.RawMessage `json:"node"`
}

// legacyServiceOut is a ServiceConfig as GET shows it.
type legacyServiceOut struct {
	Name string                       `json:"name"`
	Type string                       `json:"type"`
	Node []map[string]json.RawMessage `json:"node"`
}

// legacyExtra is what Instance.Extra holds for a node posted here.
type legacyExtra struct {
	Type string                     `json:"type"`
	Node map[string]json.RawMessage `json:"node"`
}

// legacyParsed is one posted service, ready to write.
type legacyParsed struct {
	name, typ string
	insts     []dister.Instance
}

// invalidConfig is v1.5's message, then what is wrong: v1.5's prefix is
// what its users' scripts match, the rest tells a person which field.
func invalidConfig(name, typ string, index int, why string) string {
	msg := fmt.Sprintf("invalid config of service: %s, type: %s, node index: %d", cut(name), cut(typ), index)
	if why != "" {
		msg += ": " + why
	}
	return msg
}

// cut shortens echoed input to 200 bytes.
func cut(s string) string {
	if len(s) <= 200 {
		return s
	}
	return s[:200] + "..."
}

// parseLegacyService validates a ServiceConfig and builds its instances;
// on failure it returns the message.
func parseLegacyService(sc legacyServiceIn) (legacyParsed, string) {
	p := legacyParsed{name: sc.Name, typ: sc.Type, insts: make([]dister.Instance, 0, len(sc.Node))}
	if !legacyServiceName.MatchString(sc.Name) {
		return p, invalidConfig(sc.Name, sc.Type, 0, `"name" must be 1 to 128 letters, digits or _`)
	}
	for i, raw := range sc.Node {
		inst, why := legacyNodeInstance(sc.Name, sc.Type, i, raw)
		if why != "" {
			return p, invalidConfig(sc.Name, sc.Type, i, why)
		}
		p.insts = append(p.insts, inst)
	}
	return p, ""
}

// legacyNodeInstance turns node i of a service into its instance, or says
// what is wrong with it.
func legacyNodeInstance(service, typ string, i int, raw json.RawMessage) (dister.Instance, string) {
	var node map[string]json.RawMessage
	if err := json.Unmarshal(raw, &node); err != nil || node == nil {
		return dister.Instance{}, "the node must be a JSON object"
	}
	delete(node, "status") // written by the cluster, not by clients
	priority, ok := legacyInt(node, "priority", 0, 0, dister.MaxPriority)
	if !ok {
		return dister.Instance{}, fmt.Sprintf(`"priority" must be an integer from 0 to %d`, dister.MaxPriority)
	}
	ms, ok := legacyInt(node, "interval", legacyDefaultIntervalMs, legacyMinIntervalMs, legacyMaxIntervalMs)
	if !ok {
		return dister.Instance{}, fmt.Sprintf(`"interval" must be milliseconds from %d to %d`, legacyMinIntervalMs, legacyMaxIntervalMs)
	}
	interval := time.Duration(ms) * time.Millisecond
	inst := dister.Instance{Service: service, ID: fmt.Sprintf("node-%04d", i), Priority: priority}
	switch typ {
	case "web":
		u, ok := legacyString(node, "url")
		if !ok || !validWebURL(u) {
			return dister.Instance{}, `"url" must be an http or https URL (a JSON string)`
		}
		inst.Address = u
		inst.Check = dister.Check{Type: dister.CheckWeb, Target: u, Interval: interval}
	case "tcp":
		addr, why := legacyHostPort(node)
		if why != "" {
			return dister.Instance{}, why
		}
		inst.Address = addr
		inst.Check = dister.Check{Type: dister.CheckTCP, Target: addr, Interval: interval,
			Timeout: min(legacyTCPTimeout, interval)}
	case "mysql", "pgsql":
		addr, why := legacyHostPort(node)
		if why != "" {
			return dister.Instance{}, why
		}
		var creds [3]string // user, pass, database
		for j, k := range []string{"user", "pass", "database"} {
			if creds[j], ok = legacyString(node, k); !ok {
				return dister.Instance{}, fmt.Sprintf("%q is required (a JSON string)", k)
			}
		}
		target, ok := dbTarget(typ, addr, creds[0], creds[1], creds[2])
		if !ok {
			return dister.Instance{}, `"user", "pass" and "database" do not make a connection string`
		}
		inst.Address = addr
		inst.Check = dister.Check{Type: dister.CheckType(typ), Target: target, Interval: interval}
	case "custom":
		script, ok := legacyString(node, "script")
		if !ok || strings.TrimSpace(script) == "" {
			return dister.Instance{}, `"script" is required (a JSON string)`
		}
		inst.Check = dister.Check{Type: dister.CheckCustom, Target: script, Interval: interval}
	default:
		inst.Check = dister.Check{Type: dister.CheckNever}
	}
	extra, err := json.Marshal(legacyExtra{Type: typ, Node: node})
	if err != nil || len(extra) > legacyMaxExtra {
		return dister.Instance{}, fmt.Sprintf("the node is larger than %d bytes", legacyMaxExtra)
	}
	inst.Extra = extra
	return inst, ""
}

// dbTarget is the connection string of a mysql or pgsql check; false when
// the parts do not make one that reads back as given.
func dbTarget(typ, addr, user, pass, database string) (string, bool) {
	if typ == "mysql" {
		cfg := mysql.NewConfig()
		cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = user, pass, "tcp", addr, database
		dsn := cfg.FormatDSN()
		back, err := mysql.ParseDSN(dsn)
		if err != nil || back.User != user || back.Passwd != pass || back.Addr != addr || back.DBName != database {
			return "", false
		}
		return dsn, true
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, pass), Host: addr, Path: "/" + database,
		RawQuery: "sslmode=disable"}
	return u.String(), true
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// legacyString reads a field that must be a JSON string.
func legacyString(node map[string]json.RawMessage, k string) (string, bool) {
	raw, ok := node[k]
	if !ok || isNull(raw) {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// legacyInt reads an integer given as a JSON number or a string holding
// one, within [lo, hi]; def when absent.
func legacyInt(node map[string]json.RawMessage, k string, def, lo, hi int) (int, bool) {
	raw, ok := node[k]
	if !ok {
		return def, true
	}
	var text string
	if json.Unmarshal(raw, &text) != nil || isNull(raw) {
		var n json.Number
		if isNull(raw) || json.Unmarshal(raw, &n) != nil {
			return 0, false
		}
		text = n.String()
	}
	v, err := strconv.Atoi(text)
	if err != nil || v < lo || v > hi {
		return 0, false
	}
	return v, true
}

// legacyHostPort reads host and port as host:port, or says what is wrong.
func legacyHostPort(node map[string]json.RawMessage) (string, string) {
	const badHost = `"host" must be a host name or IP address (a JSON string)`
	host, ok := legacyString(node, "host")
	if !ok {
		return "", badHost
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" || len(host) > 253 {
		return "", badHost
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_:%", r)) {
			return "", badHost
		}
	}
	port, ok := legacyInt(node, "port", 0, 1, 65535)
	if _, given := node["port"]; !given || !ok {
		return "", `"port" must be a port number (1 to 65535)`
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), ""
}

func validWebURL(s string) bool {
	if len(s) > dister.MaxAddressLen {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Hostname() != ""
}

// serviceNode is the node object of an instance, with its status, and its
// service type.
func serviceNode(in *dister.Instance) (string, map[string]json.RawMessage) {
	var x legacyExtra
	typ, node := string(in.Check.Type), map[string]json.RawMessage(nil)
	if len(in.Extra) > 0 && json.Unmarshal(in.Extra, &x) == nil && x.Node != nil {
		typ, node = x.Type, x.Node
	} else {
		// Registered through /v1 (or the SDK): no secrets here either.
		node = map[string]json.RawMessage{
			"id":       mustJSON(in.ID),
			"address":  mustJSON(in.Redacted().Address),
			"priority": mustJSON(strconv.Itoa(in.Priority)),
		}
	}
	delete(node, "status")
	switch {
	case in.Check.Type == dister.CheckNone:
		// Never checked, and passing for good.
		node["status"] = json.RawMessage("1")
	case in.LastChecked.IsZero():
		// Not checked yet: no status, as in v1.5.
	case in.Status == dister.StatusPassing:
		node["status"] = json.RawMessage("1")
	default:
		node["status"] = json.RawMessage("0")
	}
	return typ, node
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// legacyServiceOf is the ServiceConfig of a service's instances (at least
// one); its type is the first node's.
func legacyServiceOf(name string, insts []dister.Instance) legacyServiceOut {
	out := legacyServiceOut{Name: name, Node: make([]map[string]json.RawMessage, len(insts))}
	for i := range insts {
		typ, node := serviceNode(&insts[i])
		if i == 0 {
			out.Type = typ
		}
		out.Node[i] = node
	}
	return out
}

func (s *Server) legacyGetServices(c *gin.Context) {
	ctx := c.Request.Context()
	svcs := s.node.Services()
	if name := c.Query("name"); name != "" {
		insts, err := svcs.Get(ctx, name)
		if errors.Is(err, dister.ErrInvalid) || err == nil && len(insts) == 0 {
			s.legacyFail(c, msgServiceNotFound)
			return
		}
		if err != nil {
			s.legacyError(c, err)
			return
		}
		s.legacyOK(c, legacyServiceOf(name, insts), noRevision)
		return
	}
	insts, err := svcs.All(ctx)
	if err != nil {
		s.legacyError(c, err)
		return
	}
	if len(insts) > legacyMaxNodes {
		s.legacyFail(c, msgTooManyNodes)
		return
	}
	// One read: the services are shown as of one revision.
	all := map[string]legacyServiceOut{}
	for i := 0; i < len(insts); {
		j := i
		for j < len(insts) && insts[j].Service == insts[i].Service {
			j++
		}
		all[insts[i].Service] = legacyServiceOf(insts[i].Service, insts[i:j])
		i = j
	}
	s.legacyOK(c, all, noRevision)
}

func (s *Server) legacyPutServices(c *gin.Context) {
	const want = `a JSON array of services, [{"name":"...","type":"...","node":[{...},...]},...]`
	var list []legacyServiceIn
	if msg, ok := legacyBody(c, &list, want); !ok {
		s.legacyFail(c, msg)
		return
	}
	if list == nil { // the body was null
		s.legacyFail(c, msgInvalidType+"want "+want)
		return
	}
	// Validate all first; a service named twice keeps its last config.
	var order []string
	parsed := map[string]legacyParsed{}
	for _, sc := range list {
		p, msg := parseLegacyService(sc)
		if msg != "" {
			s.legacyFail(c, msg)
			return
		}
		if _, dup := parsed[p.name]; !dup {
			order = append(order, p.name)
		}
		parsed[p.name] = p
	}
	if len(order) == 0 {
		s.legacyOK(c, nil, noRevision)
		return
	}
	var insts []dister.Instance
	for _, name := range order {
		insts = append(insts, parsed[name].insts...)
	}
	ctx := c.Request.Context()
	// A custom check needs the script checks setting; refuse the node
	// by name rather than with the SDK's words.
	if name, typ, i, ok := firstCustom(order, parsed); ok {
		if !mayRunCommands(c) {
			s.failCode(c, http.StatusForbidden, codeForbidden, msgCommandsNeedAdmin)
			return
		}
		st, err := s.node.Settings(ctx)
		if err != nil {
			s.legacyError(c, err)
			return
		}
		if !st.ScriptChecks {
			s.legacyFail(c, invalidConfig(name, typ, i, `custom checks are off (PUT /v1/settings {"script_checks":true} allows them)`))
			return
		}
	}
	if err := s.node.Services().Replace(ctx, order, insts); err != nil {
		if errors.Is(err, dister.ErrInvalid) && len(insts) == 1 {
			s.legacyFail(c, invalidConfig(order[0], parsed[order[0]].typ, 0,
				strings.TrimSuffix(err.Error(), ": "+dister.ErrInvalid.Error())))
			return
		}
		// The SDK does not say which instance it refused.
		s.legacyError(c, err)
		return
	}
	s.legacyOK(c, nil, noRevision)
}

// firstCustom finds the first node with a custom check.
func firstCustom(order []string, parsed map[string]legacyParsed) (name, typ string, index int, ok bool) {
	for _, n := range order {
		p := parsed[n]
		for i, in := range p.insts {
			if in.Check.Type == dister.CheckCustom {
				return p.name, p.typ, i, true
			}
		}
	}
	return "", "", 0, false
}

func (s *Server) legacyDeleteServices(c *gin.Context) {
	const want = `a JSON array of service names, ["name",...]`
	var names []string
	if msg, ok := legacyBody(c, &names, want); !ok {
		s.legacyFail(c, msg)
		return
	}
	if names == nil { // the body was null
		s.legacyFail(c, msgInvalidType+"want "+want)
		return
	}
	var uniq []string
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			uniq = append(uniq, n)
		}
	}
	if len(uniq) == 0 {
		s.legacyOK(c, nil, noRevision)
		return
	}
	if err := s.node.Services().Replace(c.Request.Context(), uniq, nil); err != nil {
		s.legacyError(c, err)
		return
	}
	s.legacyOK(c, nil, noRevision)
}

// legacyBalance picks an alive node with the Balancer's default strategy
// (priority-weighted random, v1.5's). Only passing nodes count as alive,
// and only nodes with a priority are candidates (v1.5's rule); when every
// candidate has priority 0 they are picked uniformly.
func (s *Server) legacyBalance(c *gin.Context) {
	name := c.Query("name")
	if name == "" {
		s.legacyFail(c, msgNameRequired)
		return
	}
	ctx := c.Request.Context()
	inst, err := s.node.Balancer().Pick(ctx, name)
	if err == nil && inst.Status == dister.StatusPassing && !legacyHasPriority(&inst) {
		// A node posted without a priority is stored with priority 0, so
		// the balancer picked it among candidates that all have priority
		// 0; v1.5 never picks it: choose among the others, uniformly.
		inst, err = s.legacyPickZero(ctx, name)
	}
	switch {
	case err == nil && inst.Status == dister.StatusPassing:
		_, node := serviceNode(&inst)
		s.legacyOK(c, node, noRevision)
		return
	case errors.Is(err, dister.ErrInvalid):
		s.legacyFail(c, fmt.Sprintf("no service named '%s'", name))
		return
	case err != nil && !errors.Is(err, dister.ErrNoInstance):
		s.legacyError(c, err)
		return
	}
	// Nothing alive (a warning instance is not alive here): is there such
	// a service at all?
	insts, err := s.node.Services().Get(ctx, name)
	if err != nil {
		s.legacyError(c, err)
		return
	}
	if len(insts) == 0 {
		s.legacyFail(c, fmt.Sprintf("no service named '%s'", name))
		return
	}
	s.legacyFail(c, msgNoneAlive)
}

// legacyHasPriority tells whether a node has a priority (v1.5 balanced only
// those). A posted priority that is not an integer was refused, so present
// means valid; an instance registered through /v1 always has one.
func legacyHasPriority(in *dister.Instance) bool {
	var x legacyExtra
	if len(in.Extra) == 0 || json.Unmarshal(in.Extra, &x) != nil || x.Node == nil {
		return true
	}
	_, ok := x.Node["priority"]
	return ok
}

// legacyPickZero picks uniformly among the alive nodes of service that
// have a priority, for when the balancer's candidates all have priority 0
// (so weights say nothing): ErrNoInstance when there is none.
func (s *Server) legacyPickZero(ctx context.Context, service string) (dister.Instance, error) {
	insts, err := s.node.Services().Get(ctx, service)
	if err != nil {
		return dister.Instance{}, err
	}
	var cands []int
	for i := range insts {
		if insts[i].Status == dister.StatusPassing && legacyHasPriority(&insts[i]) {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return dister.Instance{}, dister.ErrNoInstance
	}
	return insts[cands[rand.IntN(len(cands))]], nil
}
