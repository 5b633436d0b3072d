package peer

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Authorizer decides whether the caller of a peer operation may run it.
// op is one of the Op constants (calls.go: the methods' and Call's); group is the
// group the operation names ("" for server and cluster-wide ops). The
// caller's token is TokenFrom(ctx); a caller authenticated otherwise (a
// server certificate, once the peer API speaks mutual TLS) is for the
// Authorizer to recognise from ctx as well. Its error goes back to the
// caller as it is (it should match errs.Forbidden).
type Authorizer func(ctx context.Context, op, group string) error

// tokenKey is the gRPC metadata key of the token (lower case, as gRPC
// wants).
const tokenKey = "authorization"

// TokenFrom returns the bearer token the caller sent ("" without one).
func TokenFrom(ctx context.Context) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	for _, v := range md.Get(tokenKey) {
		if scheme, tok, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	return ""
}

// WithToken makes every call of a Client carry token ("" = none).
func WithToken(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(tokenCreds(token))
}

type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if t == "" {
		return nil, nil
	}
	return map[string]string{tokenKey: "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false: on loopback and on networks the
// operator trusts, peers speak plain gRPC; with TLS the token is
// encrypted too.
func (tokenCreds) RequireTransportSecurity() bool { return false }

// Guard wraps h so that every call passes authorize first (nil = h).
func Guard(h Handler, authorize Authorizer) Handler {
	if authorize == nil {
		return h
	}
	return &guarded{h: h, auth: authorize}
}

type guarded struct {
	h    Handler
	auth Authorizer
}

func (g *guarded) Propose(ctx context.Context, req *ProposeRequest) (*ProposeResponse, error) {
	if err := g.auth(ctx, OpPropose, req.Group); err != nil {
		return nil, err
	}
	return g.h.Propose(ctx, req)
}

func (g *guarded) ProposeMany(ctx context.Context, req *ProposeManyRequest) ([]ProposeAnswer, error) {
	if err := g.auth(ctx, OpPropose, req.Group); err != nil {
		return nil, err
	}
	return g.h.ProposeMany(ctx, req)
}

func (g *guarded) Read(ctx context.Context, req *ReadRequest) (*ReadResponse, error) {
	if err := g.auth(ctx, OpRead, req.Group); err != nil {
		return nil, err
	}
	return g.h.Read(ctx, req)
}

func (g *guarded) Watch(ctx context.Context, req *WatchRequest, send func(*WatchFrame) error) error {
	if err := g.auth(ctx, OpWatch, req.Group); err != nil {
		return err
	}
	// Checked again before each frame: a token removed from the token
	// file (or given less) reads nothing more through a stream it opened
	// before. The refusal ends the stream with its error.
	var refused error
	err := g.h.Watch(ctx, req, func(f *WatchFrame) error {
		if refused = g.auth(ctx, OpWatch, req.Group); refused != nil {
			return refused
		}
		return send(f)
	})
	if refused != nil {
		return refused
	}
	return err
}

func (g *guarded) Feed(ctx context.Context, req *FeedRequest, in <-chan FeedInput, send func(*WatchFrame) error) error {
	if err := g.auth(ctx, OpWatch, req.Watch.Group); err != nil {
		return err
	}
	// Checked again before each frame, as for a watch.
	var refused error
	err := g.h.Feed(ctx, req, in, func(f *WatchFrame) error {
		if refused = g.auth(ctx, OpWatch, req.Watch.Group); refused != nil {
			return refused
		}
		return send(f)
	})
	if refused != nil {
		return refused
	}
	return err
}

func (g *guarded) Snapshot(ctx context.Context, w io.Writer) (any, error) {
	if err := g.auth(ctx, OpSnapshot, ""); err != nil {
		return nil, err
	}
	return g.h.Snapshot(ctx, w)
}

// Call finds the group in the op's JSON request: every request that acts
// on one group names it in "group"; server and cluster-wide ops do not.
func (g *guarded) Call(ctx context.Context, op string, body []byte) (any, error) {
	var named struct {
		Group string `json:"group"`
	}
	_ = json.Unmarshal(body, &named) // a malformed body is the handler's to refuse
	if err := g.auth(ctx, op, named.Group); err != nil {
		return nil, err
	}
	out, err := g.h.Call(ctx, op, body)
	if err != nil {
		return out, err
	}
	// The group lists answer any caller allowed to route, but show only
	// the groups it may read: a token limited to some groups must not
	// learn the other tenants' group names (REST's GET /v1/groups filters
	// the same way).
	switch v := out.(type) {
	case []string:
		if op == OpGroups {
			out = slices.DeleteFunc(v, func(name string) bool { return !g.readable(ctx, name) })
		}
	case Topology:
		v.Groups = slices.DeleteFunc(v.Groups, func(s GroupState) bool { return !g.readable(ctx, s.Name) })
		out = v
	}
	return out, nil
}

// readable reports whether the caller may read group.
func (g *guarded) readable(ctx context.Context, group string) bool {
	return g.auth(ctx, OpRead, group) == nil
}
