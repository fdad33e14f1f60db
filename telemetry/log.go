package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// LogFormats are the values NewLogger accepts for format.
var LogFormats = []string{"text", "json"}

// NewLogger returns a structured logger writing to w at the given level ("debug", "info",
// "warn", "error") in the given format ("text" or "json").
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("telemetry: log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("telemetry: log format %q: want text or json", format)
}
