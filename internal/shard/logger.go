package shard

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/lni/dragonboat/v4/logger"
)

// dragonboat's logger factory is process-global and panics when set twice,
// so it is installed once and forwards to the logger of the most recently
// opened Host. Hosts in one process therefore share one log sink for engine
// messages; their own messages use their own logger.
var (
	installOnce sync.Once
	engineSink  atomic.Pointer[slog.Logger]
	// engineLoopback: the most recently opened Host's Raft address is on
	// a loopback host, where unencrypted transport is no risk.
	engineLoopback atomic.Bool
)

func installLogger(l *slog.Logger, raftAddr string) {
	engineSink.Store(l.With("component", "dragonboat"))
	engineLoopback.Store(loopbackAddr(raftAddr))
	installOnce.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			// dragonboat filters at INFO; engineLevel then decides what
			// each of its messages is worth to an operator.
			a := &slogAdapter{pkg: pkg}
			a.level.Store(int32(logger.INFO))
			return a
		})
	})
}

func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// routine lists dragonboat WARNING messages (by the start of their format
// string) that are normal Raft operation, not something an operator must
// act on: elections, votes, messages dropped while there is no leader (the
// callers retry), the notice every StaleRead prints. They are logged at
// INFO, so a healthy cluster at the default level prints no WARN line.
// Real trouble (a lost quorum, unreachable peers, snapshot failures,
// rejected configuration changes) stays WARN.
var routine = []string{
	"%s became PreVote candidate",
	"%s became candidate",
	"%s received %s rejection from %s",
	"%s received %s from %s",
	"%s sent RequestPreVote to %s",
	"%s sent RequestVote to %s",
	"%s dropped RequestVote at term %d from %s, leader available",
	"%s received %s with higher term (%d) from %s",
	"%s become follower",
	"%s become followerKE",
	"%s campaign skipped, pending config change",
	"%s cast preVote from",
	"%s rejected preVote",
	"%s cast vote from",
	"%s rejected vote",
	"%s dropped proposal, leader transferring",
	"%s dropped ReadIndex, not ready",
	"%s dropped proposal, no leader",
	"%s dropped ReadIndex, no leader",
	"%s dropped read index, no leader",
	"%s dropped LeaderTransfer, no leader",
	"%s received %d votes and %d rejections",
	"%s received %d preVotes and %d rejections",
	"dropped RequestVoteResp from nonVoting",
	"dropped RequestPreVoteResp from nonVoting",
	"StaleRead called",
	"%s dropped proposal, shard stopped",
	// Ticks queued while a replica opened its state machine at start, or
	// while a loaded machine did not schedule it for half an election
	// timeout; elections that follow are counted in the metrics.
	"%s had %d LocalTick msgs in one batch",
}

// engineLevel is the slog level of one dragonboat message.
func engineLevel(l logger.LogLevel, format string) slog.Level {
	switch l {
	case logger.DEBUG:
		return slog.LevelDebug
	case logger.INFO:
		// dragonboat's INFO is chatty (every replica start, snapshot,
		// log compaction): DEBUG here.
		return slog.LevelDebug
	case logger.WARNING:
		if strings.HasPrefix(format, "mutual TLS disabled") {
			// Unencrypted Raft traffic matters only off this host.
			if engineLoopback.Load() {
				return slog.LevelInfo
			}
			return slog.LevelWarn
		}
		for _, r := range routine {
			if strings.HasPrefix(format, r) {
				return slog.LevelInfo
			}
		}
		return slog.LevelWarn
	}
	return slog.LevelError
}

type slogAdapter struct {
	pkg   string
	level atomic.Int32 // a dragonboat logger.LogLevel
}

func (a *slogAdapter) SetLevel(l logger.LogLevel) { a.level.Store(int32(l)) }

func (a *slogAdapter) log(l logger.LogLevel, format string, args []any) {
	if int32(l) > a.level.Load() {
		return
	}
	sink := engineSink.Load()
	if sink == nil {
		return
	}
	sl := engineLevel(l, format)
	if !sink.Enabled(context.Background(), sl) || repeatedConnFailure(format, args) {
		return
	}
	sink.Log(context.Background(), sl, fmt.Sprintf(format, args...), "pkg", a.pkg)
}

func (a *slogAdapter) Debugf(f string, args ...any)   { a.log(logger.DEBUG, f, args) }
func (a *slogAdapter) Infof(f string, args ...any)    { a.log(logger.INFO, f, args) }
func (a *slogAdapter) Warningf(f string, args ...any) { a.log(logger.WARNING, f, args) }
func (a *slogAdapter) Errorf(f string, args ...any)   { a.log(logger.ERROR, f, args) }

// Panicf is called by dragonboat on invariant violations; it must not return.
func (a *slogAdapter) Panicf(f string, args ...any) {
	msg := fmt.Sprintf(f, args...)
	if sink := engineSink.Load(); sink != nil {
		sink.Error(msg, "pkg", a.pkg)
	}
	panic(msg)
}
