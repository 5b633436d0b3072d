package health

import (
	"context"
	"database/sql/driver"
	"fmt"
	"net"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
)

// dialFunc connects under the prober's target policy.
type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// probeMySQL opens one connection with the DSN and pings it. It uses the
// driver's connector directly rather than a database/sql pool: a pool would
// keep a goroutine and idle connections per target between probes.
func probeMySQL(ctx context.Context, dsn string, timeout time.Duration, dial dialFunc) Result {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return Result{Status: Critical, Output: fmt.Sprintf("mysql: bad DSN: %v", err)}
	}
	where := "mysql " + cfg.Addr
	// The driver's own I/O timeouts back up ctx for the reads and writes it
	// does not watch ctx on; a DSN cannot ask for more than the check allows.
	for _, t := range []*time.Duration{&cfg.Timeout, &cfg.ReadTimeout, &cfg.WriteTimeout} {
		if *t <= 0 || *t > timeout {
			*t = timeout
		}
	}
	cfg.DialFunc = dial
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return Result{Status: Critical, Output: fmt.Sprintf("%s: %v", where, err)}
	}
	conn, err := connector.Connect(ctx)
	if err != nil {
		return Result{Status: Critical, Output: timeoutOr(ctx, timeout, where+": connect", err)}
	}
	defer conn.Close()
	if pinger, ok := conn.(driver.Pinger); ok {
		if err := pinger.Ping(ctx); err != nil {
			return Result{Status: Critical, Output: timeoutOr(ctx, timeout, where+": ping", err)}
		}
	}
	return Result{Status: Passing, Output: where + ": connected and pinged"}
}

// probePgSQL connects with pgx and pings. pgx redacts the password from the
// errors it returns, so they can go into Output as they are.
func probePgSQL(ctx context.Context, connString string, timeout time.Duration, dial dialFunc) Result {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return Result{Status: Critical, Output: fmt.Sprintf("pgsql: bad connection string: %v", err)}
	}
	where := fmt.Sprintf("pgsql %s:%d", cfg.Host, cfg.Port)
	if cfg.ConnectTimeout <= 0 || cfg.ConnectTimeout > timeout {
		cfg.ConnectTimeout = timeout
	}
	cfg.DialFunc = dial
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return Result{Status: Critical, Output: timeoutOr(ctx, timeout, where+": connect", err)}
	}
	// With ctx spent, Close skips the polite Terminate but still closes
	// the socket, so the probe never outlives its timeout.
	defer conn.Close(ctx)
	if err := conn.Ping(ctx); err != nil {
		return Result{Status: Critical, Output: timeoutOr(ctx, timeout, where+": ping", err)}
	}
	return Result{Status: Passing, Output: where + ": connected and pinged"}
}
