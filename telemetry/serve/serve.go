package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
)

// DefaultGrace is how long a server may take to stop once its context ends.
const DefaultGrace = 2 * time.Second

// Until runs serve until it returns or ctx ends. When ctx ends it calls stop with a context that
// expires after grace (DefaultGrace when zero) and returns stop's error; an error from serve
// itself (it returned while ctx was live) is returned prefixed with name.
func Until(ctx context.Context, name string, grace time.Duration, serve func() error, stop func(context.Context) error) error {
	if grace <= 0 {
		grace = DefaultGrace
	}
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := stop(sctx); err != nil {
		return fmt.Errorf("%s: stopping: %w", name, err)
	}
	return nil
}

// GRPC serves srv on ln until ctx ends, then stops gracefully, cutting the streams still open
// after grace.
func GRPC(ctx context.Context, name string, srv *grpc.Server, ln net.Listener, grace time.Duration) error {
	return Until(ctx, name, grace, func() error { return srv.Serve(ln) }, func(sctx context.Context) error {
		StopGRPC(sctx, srv)
		return nil
	})
}

// StopGRPC stops srv gracefully, and at once when ctx ends first.
func StopGRPC(ctx context.Context, srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		srv.Stop()
		<-done
	}
}

// HTTP serves srv on ln (TLS when srv.TLSConfig is set) until ctx ends, then shuts it down,
// closing what is still open after grace.
func HTTP(ctx context.Context, name string, srv *http.Server, ln net.Listener, grace time.Duration) error {
	return Until(ctx, name, grace, func() error {
		if srv.TLSConfig != nil {
			return srv.ServeTLS(ln, "", "")
		}
		return srv.Serve(ln)
	}, func(sctx context.Context) error {
		if err := srv.Shutdown(sctx); err != nil {
			return errors.Join(err, srv.Close())
		}
		return nil
	})
}

// Wait waits for a process's components (group). Once ctx ends (a signal) it gives them grace
// to stop before returning anyway, then runs the cleanups (flushing traces and metrics, closing
// files) with a second each, whatever happened.
func Wait(ctx context.Context, log *slog.Logger, group *errgroup.Group, grace time.Duration, cleanups ...func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- group.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		log.Info("shutting down")
		select {
		case err = <-done:
		case <-time.After(grace):
			err = fmt.Errorf("components did not stop within %s", grace)
		}
	}
	for _, c := range cleanups {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = errors.Join(err, c(cctx))
		cancel()
	}
	return err
}
