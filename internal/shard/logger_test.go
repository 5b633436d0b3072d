package shard

import (
	"log/slog"
	"testing"

	"github.com/lni/dragonboat/v4/logger"
)

// TestEngineLevel: dragonboat's routine WARNING messages (elections,
// requests dropped without a leader, StaleRead's notice) come out at INFO,
// its real warnings stay WARN, and the unencrypted-transport notice is WARN
// only off loopback.
func TestEngineLevel(t *testing.T) {
	defer engineLoopback.Store(engineLoopback.Load())
	engineLoopback.Store(true)
	for _, c := range []struct {
		level  logger.LogLevel
		format string
		want   slog.Level
	}{
		{logger.WARNING, "%s became PreVote candidate", slog.LevelInfo},
		{logger.WARNING, "%s dropped ReadIndex, no leader", slog.LevelInfo},
		{logger.WARNING, "%s received %s from %s", slog.LevelInfo},
		{logger.WARNING, "StaleRead called, linearizability not guaranteed for stale read", slog.LevelInfo},
		{logger.WARNING, "mutual TLS disabled, communication is insecure", slog.LevelInfo},
		{logger.WARNING, "%s has lost quorum", slog.LevelWarn},
		{logger.WARNING, "%s had %d LocalTick msgs in one batch", slog.LevelInfo},
		{logger.WARNING, "%s became unreachable, affected %d nodes", slog.LevelWarn},
		{logger.INFO, "%s applied snapshot", slog.LevelDebug},
		{logger.ERROR, "failed to connect", slog.LevelError},
	} {
		if got := engineLevel(c.level, c.format); got != c.want {
			t.Errorf("%q at dragonboat level %d: %v, want %v", c.format, c.level, got, c.want)
		}
	}
	engineLoopback.Store(false)
	if got := engineLevel(logger.WARNING, "mutual TLS disabled, communication is insecure"); got != slog.LevelWarn {
		t.Errorf("the unencrypted-transport notice off loopback: %v, want WARN", got)
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "localhost:1": true, "[::1]:1": true, "10.0.0.1:1": false, "bad": false} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
