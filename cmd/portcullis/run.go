package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
)

const (
	// defaultXDSAddr is where the control plane serves ADS and the certificate service, and
	// where agents dial by default.
	defaultXDSAddr = "127.0.0.1:15010"
	// shutdownGrace bounds a clean stop after SIGINT/SIGTERM.
	shutdownGrace = 5 * time.Second
)

// waitWithGrace waits for the run group; once ctx is cancelled (a signal) it gives the group
// shutdownGrace to stop before returning anyway, then runs the cleanups.
func waitWithGrace(ctx context.Context, log *slog.Logger, group *errgroup.Group, cleanups ...func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- group.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		log.Info("shutting down")
		select {
		case err = <-done:
		case <-time.After(shutdownGrace):
			err = fmt.Errorf("components did not stop within %s", shutdownGrace)
		}
	}
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, c := range cleanups {
		err = errors.Join(err, c(cctx))
	}
	return err
}
