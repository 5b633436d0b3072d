package shard

import (
	"context"
	"fmt"
	"log/slog"
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
)

func installLogger(l *slog.Logger) {
	engineSink.Store(l.With("component", "dragonboat"))
	installOnce.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			// Warning level by default, so a healthy cluster stays quiet.
			a := &slogAdapter{pkg: pkg}
			a.level.Store(int32(logger.WARNING))
			return a
		})
	})
}

type slogAdapter struct {
	pkg   string
	level atomic.Int32 // a dragonboat logger.LogLevel
}

func (a *slogAdapter) SetLevel(l logger.LogLevel) { a.level.Store(int32(l)) }

func (a *slogAdapter) log(l logger.LogLevel, sl slog.Level, format string, args []any) {
	if int32(l) > a.level.Load() {
		return
	}
	sink := engineSink.Load()
	if sink == nil || !sink.Enabled(context.Background(), sl) {
		return
	}
	sink.Log(context.Background(), sl, fmt.Sprintf(format, args...), "pkg", a.pkg)
}

func (a *slogAdapter) Debugf(f string, args ...any) { a.log(logger.DEBUG, slog.LevelDebug, f, args) }
func (a *slogAdapter) Infof(f string, args ...any)  { a.log(logger.INFO, slog.LevelInfo, f, args) }
func (a *slogAdapter) Warningf(f string, args ...any) {
	a.log(logger.WARNING, slog.LevelWarn, f, args)
}
func (a *slogAdapter) Errorf(f string, args ...any) { a.log(logger.ERROR, slog.LevelError, f, args) }

// Panicf is called by dragonboat on invariant violations; it must not return.
func (a *slogAdapter) Panicf(f string, args ...any) {
	msg := fmt.Sprintf(f, args...)
	if sink := engineSink.Load(); sink != nil {
		sink.Error(msg, "pkg", a.pkg)
	}
	panic(msg)
}
