package ca

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Expiry warnings: a certificate whose remaining life falls under WarnFraction of its lifetime
// is logged at warning level (once per warnEvery), under CriticalFraction at error level (once
// per criticalEvery). For a one-year root that is about three months and five weeks ahead.
const (
	WarnFraction     = 0.25
	CriticalFraction = 0.10
	warnEvery        = 24 * time.Hour
	criticalEvery    = time.Hour
)

// rotator is the CA's timing: every reloadInterval it rereads what the CLI changed (a rotation,
// a revocation), derives each authority's phase at the current time, renews intermediates at
// half of their life and hands the signer the resulting snapshot; every warnInterval it warns
// about certificates nearing expiry. Its clock is injectable (Config.Clock), its tickers are the
// runtime's, so tests drive both with testing/synctest.
type rotator struct {
	store                                         *store
	signer                                        *signer
	revs                                          *atomic.Pointer[revocations]
	now                                           func() time.Time
	log                                           *slog.Logger
	intermediateTTL, reloadInterval, warnInterval time.Duration
	rotateCommand                                 string // named in root expiry warnings; "" derives it

	mu           sync.Mutex // one refresh at a time
	stateStamp   fileStamp
	revokedStamp fileStamp
	warnedAt     map[string]time.Time // by certificate and level; used by run's goroutine only
}

func (r *rotator) run(ctx context.Context) error {
	reload := time.NewTicker(r.reloadInterval)
	defer reload.Stop()
	warn := time.NewTicker(r.warnInterval)
	defer warn.Stop()
	r.checkExpiry()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reload.C:
			if err := r.refresh(false); err != nil {
				r.log.Error("CA refresh failed; still signing with the current authority", "err", err)
			}
			if err := r.reloadRevocations(); err != nil {
				r.log.Error("reloading revocations failed; keeping the previous list", "file", r.store.revocationsPath(), "err", err)
			}
		case <-warn.C:
			r.checkExpiry()
		}
	}
}

// refresh recomputes the snapshot: from the files when the state file changed (or force), and
// from the clock otherwise, since activations and drops happen at set times.
func (r *rotator) refresh(force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	old := r.signer.current()
	stamp, err := r.store.stateStamp()
	if err != nil {
		return err
	}
	st, loaded := (*State)(nil), map[string]*authority(nil)
	if old != nil && !force && stamp == r.stateStamp {
		st, loaded = old.state, old.authorities
	} else {
		if st, err = r.store.readState(); err != nil {
			return err
		}
		loaded = map[string]*authority{}
	}
	phases, err := st.Phases(now)
	if err != nil {
		return err
	}
	auths := make(map[string]*authority, len(phases))
	for _, p := range phases {
		if p.Phase == PhaseDropped {
			continue
		}
		a := loaded[p.ID]
		if a == nil {
			if a, err = r.store.loadAuthority(p.AuthorityRecord); err != nil {
				return err
			}
		}
		if p.Phase != PhaseRetired && renewalDue(a, now, r.intermediateTTL) {
			if a, err = r.store.renew(a); err != nil {
				return err
			}
		}
		auths[p.ID] = a
	}
	next := buildSnapshot(r.signer.td, st, phases, auths, now)
	if next.active == nil {
		return fmt.Errorf("ca: active authority %s cannot sign: its root has expired (portcullis ca rotate --now), or it came from --ca-cert and the control plane was not started with that --ca-cert and --ca-key", activeRecord(phases).ID)
	}
	r.stateStamp = stamp
	if r.signer.set(next) {
		r.log.Info("CA authorities changed", "active", next.active.id, "signer_serial", next.active.signingCert().SerialNumber.Text(16),
			"bundle_roots", len(next.roots), "phases", describePhases(phases))
		r.signer.notify()
	}
	return nil
}

// renewalDue reports whether an authority's intermediate should be (re)issued: missing, or past
// half of the configured lifetime. An intermediate already ending with its root is not renewed,
// since a new one could not live longer; one whose root key is not here cannot be.
func renewalDue(a *authority, now time.Time, ttl time.Duration) bool {
	if a.rootKey == nil {
		return false
	}
	if !a.canSign() {
		return true
	}
	s := a.signingCert()
	if s.NotAfter.Equal(a.root.NotAfter) {
		return false
	}
	return s.NotAfter.Sub(now) < ttl/2
}

func describePhases(phases []AuthorityPhase) string {
	parts := make([]string, 0, len(phases))
	for _, p := range sortedPhases(phases) {
		parts = append(parts, p.ID+"="+string(p.Phase))
	}
	return strings.Join(parts, ",")
}

// reloadRevocations rereads the revocation list when the CLI replaced it.
func (r *rotator) reloadRevocations() error {
	stamp, err := statFile(r.store.revocationsPath())
	if err != nil {
		return err
	}
	if r.revs.Load() != nil && stamp == r.revokedStamp {
		return nil
	}
	list, err := r.store.revocations()
	if err != nil {
		return err
	}
	if r.revs.Load() != nil {
		r.log.Info("revocation list reloaded", "serials", len(list.serials), "spiffe_ids", len(list.ids))
	}
	r.revs.Store(list)
	r.revokedStamp = stamp
	return nil
}

// checkExpiry logs certificates nearing expiry, well before it happens: an expired root with no
// log line saying so is a classic mesh outage.
func (r *rotator) checkExpiry() {
	now := r.now()
	for _, cc := range r.signer.current().certificates() {
		if cc.superseded || cc.phase == PhaseRetired {
			continue
		}
		life := cc.cert.NotAfter.Sub(cc.cert.NotBefore)
		left := cc.cert.NotAfter.Sub(now)
		var level slog.Level
		var every time.Duration
		switch {
		case left <= time.Duration(float64(life)*CriticalFraction):
			level, every = slog.LevelError, criticalEvery
		case left <= time.Duration(float64(life)*WarnFraction):
			level, every = slog.LevelWarn, warnEvery
		default:
			continue
		}
		key := cc.role + "/" + cc.cert.SerialNumber.Text(16) + "/" + level.String()
		if last, ok := r.warnedAt[key]; ok && now.Sub(last) < every {
			continue
		}
		r.warnedAt[key] = now
		action := "the control plane renews intermediates at half-life; check its log for renewal errors"
		if cc.role == "root" {
			cmd := r.rotateCommand
			if cmd == "" {
				cmd = "portcullis ca rotate --data-dir " + r.store.dataDir
			}
			action = "rotate it: " + cmd + " (see docs/identity.md)"
			if r.store.up != nil {
				action = "provide a new --ca-cert/--ca-key before it expires (see docs/identity.md)"
			}
		}
		r.log.Log(context.Background(), level, "CA certificate nearing expiry",
			"role", cc.role, "authority", cc.authority, "serial", cc.cert.SerialNumber.Text(16),
			"expires", cc.cert.NotAfter.UTC().Format(time.RFC3339), "remaining", left.Round(time.Minute).String(), "action", action)
	}
}
