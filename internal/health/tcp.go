package health

import (
	"context"
	"time"
)

// probeTCP passes when a connection opens; nothing is sent, so it works
// against any protocol and never disturbs the instance beyond an accept.
func (p *Prober) probeTCP(ctx context.Context, target string, timeout time.Duration) Result {
	conn, err := p.dial(ctx, "tcp", target)
	if err != nil {
		return Result{Status: Critical, Output: timeoutOr(ctx, timeout, "TCP connect "+target, err)}
	}
	conn.Close()
	return Result{Status: Passing, Output: "TCP connect " + target + ": ok"}
}
