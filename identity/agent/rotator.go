package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/telemetry/watch"
)

// current holds the identity being served (nil when there is none, or it expired). Setting
// the identity already served wakes nobody.
type current struct{ watch.Value[*Identity] }

func (c *current) set(id *Identity) {
	c.Update(func(old *Identity) (*Identity, bool) { return id, old != id })
}

// rotator obtains and renews the identity.
type rotator struct {
	addr      string
	tokenFile string
	// saTokenFile, trustDomain and pins: join with the pod's service-account token instead.
	saTokenFile string
	trustDomain spiffeid.TrustDomain
	pins        []string
	socketDir   string
	persist     bool
	backoffMin  time.Duration
	backoffMax  time.Duration
	log         *slog.Logger
	cur         *current
	onRotate    func(ok bool)
}

// run keeps an identity until ctx ends: renew at half-life; on failure retry with jittered
// exponential backoff, serving the current SVID until it expires.
func (r *rotator) run(ctx context.Context) error {
	backoff := r.backoffMin
	for {
		id, _ := r.cur.Current()
		now := time.Now()
		if id != nil && now.Before(id.RenewAt()) {
			if !sleep(ctx, id.RenewAt().Sub(now)) {
				return nil
			}
			continue
		}
		next, err := r.obtain(ctx, id)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			r.cur.set(next)
			r.onRotate(true)
			backoff = r.backoffMin
			r.log.Info("SVID obtained", "spiffe_id", next.ID().String(), "serial", next.Leaf().SerialNumber.Text(16),
				"expires", next.NotAfter().UTC().Format(time.RFC3339), "renew_at", next.RenewAt().UTC().Format(time.RFC3339))
			if r.persist {
				if err := saveIdentity(r.socketDir, next); err != nil {
					r.log.Warn("could not persist the SVID; a restart will need a new join token", "err", err)
				}
			}
			continue
		}
		r.onRotate(false)
		wait := jitter(backoff)
		attrs := []any{"err", err, "retry_in", wait.Round(time.Millisecond).String()}
		if id != nil {
			left := time.Until(id.NotAfter())
			if left <= 0 {
				r.cur.set(nil)
				r.log.Error("SVID expired and could not be renewed; not serving an identity until the control plane answers (a new join token may be needed)", attrs...)
			} else {
				r.log.Warn("SVID renewal failed; still serving the current SVID", append(attrs, "expires_in", left.Round(time.Second).String())...)
				// Never sleep past the expiry: one last try just before it.
				wait = min(wait, max(left-time.Second, r.backoffMin))
			}
		} else {
			r.log.Error("could not obtain an SVID", attrs...)
		}
		if permanent(err) {
			backoff = r.backoffMax
		} else {
			backoff = min(2*backoff, r.backoffMax)
		}
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

// obtain renews over mTLS while the current SVID is valid, and joins with the token otherwise
// (or when the control plane refuses the SVID, e.g. revoked).
func (r *rotator) obtain(ctx context.Context, cur *Identity) (*Identity, error) {
	if cur != nil && time.Now().Before(cur.NotAfter()) {
		next, err := renew(ctx, r.addr, cur, time.Now())
		if err == nil || !refusedCredential(err) {
			return next, err
		}
		r.log.Warn("control plane refused the current SVID; trying the join token", "err", err)
	}
	if r.saTokenFile != "" {
		raw, err := os.ReadFile(r.saTokenFile)
		if err != nil {
			return nil, fmt.Errorf("agent: service account token file: %w", err)
		}
		return joinServiceAccount(ctx, r.addr, string(raw), r.trustDomain, r.pins, time.Now())
	}
	raw, err := readToken(r.tokenFile)
	if err != nil {
		return nil, err
	}
	return join(ctx, r.addr, raw, time.Now())
}

func readToken(path string) (string, error) {
	if path == "" {
		return "", errors.New("agent: no SVID to renew with and no --token-file")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("agent: token file: %w", err)
	}
	if len(data) > attest.MaxTokenBytes+64 {
		return "", fmt.Errorf("agent: token file %s is too large", path)
	}
	return strings.TrimSpace(string(data)), nil
}

// refusedCredential: the control plane answered and refused the SVID itself.
func refusedCredential(err error) bool {
	c := status.Code(err) // unwraps
	return c == codes.PermissionDenied || c == codes.Unauthenticated
}

// permanent errors do not go away by retrying soon: a bad, used or expired token needs an
// operator, so retry at the slowest pace.
func permanent(err error) bool {
	if errors.Is(err, attest.ErrTokenMalformed) {
		return true
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument:
		return true
	}
	return false
}

// jitter spreads retries over [d/2, d] so agents that lost the control plane together do not
// return together.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
