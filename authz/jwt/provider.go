package jwt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/portcullis/portcullis/xds/model"
)

// Provider states, as shown on /debug/authz and in metrics.
const (
	StatePending = "pending" // no fetch has finished yet
	StateOK      = "ok"      // the last fetch succeeded
	StateStale   = "stale"   // the last fetch failed; the last good keys are in use
	StateFailing = "failing" // no fetch has ever succeeded: tokens of this issuer are rejected
)

// ProviderStatus is one provider's health.
type ProviderStatus struct {
	Provider            string    `json:"provider"`
	Issuer              string    `json:"issuer"`
	Source              string    `json:"source"`
	State               string    `json:"state"`
	Keys                int       `json:"keys"`
	KeyIDs              []string  `json:"keyIds"`
	SkippedKeys         int       `json:"skippedKeys,omitempty"`
	LastAttempt         time.Time `json:"lastAttempt,omitzero"`
	LastSuccess         time.Time `json:"lastSuccess,omitzero"`
	LastChange          time.Time `json:"lastChange,omitzero"`
	LastError           string    `json:"lastError,omitempty"`
	ConsecutiveFailures int       `json:"consecutiveFailures"`
	Fetches             uint64    `json:"fetches"`
	Failures            uint64    `json:"failures"`
}

// provider verifies tokens of one JWTProvider document and keeps its keys fresh.
type provider struct {
	name      string // namespace/name
	namespace string
	spec      model.JWTProviderSpec
	specHash  string
	algs      []string
	joseAlgs  []jose.SignatureAlgorithm
	skew      time.Duration
	refresh   time.Duration
	src       keySource
	opts      *Options
	log       *slog.Logger
	metrics   *metrics

	keys atomic.Pointer[keySet]
	gen  atomic.Uint64 // bumped whenever the usable keys change; invalidates cached tokens

	kick chan struct{} // asks the refresh loop to fetch now (unknown kid, no keys yet)

	mu          sync.Mutex
	status      ProviderStatus
	fetchDone   chan struct{} // closed when the fetch in progress (or the next one) finishes
	inFlight    bool
	lastAttempt time.Time
	stopped     chan struct{}
}

func newProvider(doc *model.JWTProviderDoc, opts *Options, m *metrics) (*provider, error) {
	r := model.RefOf(doc)
	ref := r.String()
	spec := doc.Spec
	hash, err := specHash(&spec)
	if err != nil {
		return nil, err
	}
	src, err := newKeySource(&spec, opts.HTTPClient, opts.FetchTimeout)
	if err != nil {
		return nil, fmt.Errorf("jwt: provider %s: %w", ref, err)
	}
	algs := spec.Algorithms
	if len(algs) == 0 {
		algs = []string{"RS256", "ES256"}
	}
	p := &provider{
		name: ref, namespace: r.Namespace, spec: spec, specHash: hash, algs: algs, src: src, opts: opts, metrics: m,
		log:       opts.Logger.With("provider", ref),
		skew:      model.DefaultClockSkew,
		refresh:   model.DefaultJWKSRefresh,
		kick:      make(chan struct{}, 1),
		fetchDone: make(chan struct{}),
		stopped:   make(chan struct{}),
		status:    ProviderStatus{Provider: ref, Issuer: spec.Issuer, Source: src.String(), State: StatePending},
	}
	for _, a := range algs {
		p.joseAlgs = append(p.joseAlgs, jose.SignatureAlgorithm(a))
	}
	if spec.ClockSkew != nil {
		p.skew = spec.ClockSkew.Duration
	}
	if r := spec.JWKS.RefreshInterval; r != nil && r.Duration > 0 {
		p.refresh = r.Duration
	}
	return p, nil
}

// specHash identifies a provider's configuration: an unchanged hash across mesh versions keeps
// the running provider, its keys and the tokens it verified.
func specHash(s *model.JWTProviderSpec) (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("jwt: hashing provider spec: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// run fetches keys now (or, when fetched, after the refresh interval) and then on schedule, until ctx ends. After a failure it retries with
// exponential backoff (from Options.RetryBackoff up to the refresh interval), which is also how
// an issuer that comes up late is picked up; a fetch asked for through kick (unknown kid) runs
// at once.
func (p *provider) run(ctx context.Context, fetched bool) {
	defer close(p.stopped)
	backoff := p.opts.RetryBackoff
	first := time.Duration(0)
	if fetched {
		first = jitter(p.refresh)
	}
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.kick:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		err := p.fetch(ctx)
		var wait time.Duration
		switch err {
		case nil:
			backoff = p.opts.RetryBackoff
			wait = jitter(p.refresh)
		default:
			wait = backoff
			backoff = min(backoff*2, max(p.refresh, p.opts.RetryBackoff))
		}
		timer.Reset(wait)
	}
}

// jitter spreads refreshes of many proxies' providers by ±10%.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

// fetch reads the key set once and installs it when usable. A failed fetch or an empty set
// leaves the previous keys in place.
func (p *provider) fetch(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, p.opts.FetchTimeout)
	defer cancel()
	start := p.opts.Now()
	p.mu.Lock()
	p.lastAttempt, p.inFlight = start, true
	// A kick sent before this fetch started is answered by it (its sender waits on the channel
	// this fetch closes); kicks are not sent while a fetch is in flight.
	select {
	case <-p.kick:
	default:
	}
	p.mu.Unlock()

	data, err := p.src.fetch(fctx)
	var ks *keySet
	if err == nil {
		ks, err = parseJWKS(data, p.algs)
	}
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: not a failure of the issuer
	}
	now := p.opts.Now()
	changed := false
	if err == nil {
		ks.fetched = now
		if old := p.keys.Load(); old == nil || old.hash != ks.hash {
			changed = true
			p.gen.Add(1)
		}
		p.keys.Store(ks)
	}

	p.mu.Lock()
	st := &p.status
	st.LastAttempt = now
	st.Fetches++
	result := "ok"
	if err != nil {
		result = "error"
		st.Failures++
		st.ConsecutiveFailures++
		st.LastError = err.Error()
		if p.keys.Load() != nil {
			st.State = StateStale
		} else {
			st.State = StateFailing
		}
	} else {
		st.State, st.LastSuccess, st.LastError, st.ConsecutiveFailures = StateOK, now, "", 0
		st.Keys, st.KeyIDs, st.SkippedKeys = len(ks.keys), ks.keyIDs(), ks.skipped
		if changed {
			st.LastChange = now
		} else {
			result = "unchanged"
		}
	}
	failures := st.ConsecutiveFailures
	// Counted before waiters wake, so whoever waited on this fetch sees it in the metrics.
	p.metrics.fetched(ctx, p.name, result)
	p.inFlight = false
	close(p.fetchDone)
	p.fetchDone = make(chan struct{})
	p.mu.Unlock()

	switch {
	case err != nil && failures == 1:
		p.log.Warn("JWKS fetch failed; keeping the last good keys", "source", p.src.String(), "err", err, "have_keys", p.keys.Load() != nil)
	case err != nil:
		p.log.Debug("JWKS fetch failed again", "source", p.src.String(), "err", err, "failures", failures)
	case changed:
		p.log.Info("JWKS loaded", "source", p.src.String(), "keys", len(ks.keys), "skipped", ks.skipped)
	}
	return err
}

// awaitFetch asks the refresh loop for a fetch now and waits for it, for a token signed with a
// key id the provider does not have (rotation) or a provider with no keys yet (late issuer). It
// returns at once when a fetch was attempted within Options.MinRefetchInterval, so tokens with
// made-up key ids cannot make the service hammer the issuer.
func (p *provider) awaitFetch(ctx context.Context) bool {
	if p.src.static() {
		return false
	}
	p.mu.Lock()
	done := p.fetchDone
	// Waiting for a fetch already under way costs the issuer nothing; starting one is limited.
	if !p.inFlight {
		if !p.lastAttempt.IsZero() && p.opts.Now().Sub(p.lastAttempt) < p.opts.MinRefetchInterval {
			p.mu.Unlock()
			return false
		}
		// Rate-limit the next ones now, not when the fetch starts, so a burst asks once.
		p.lastAttempt = p.opts.Now()
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	p.mu.Unlock()
	wait := time.NewTimer(refetchWait(ctx, p.opts.RefetchWait))
	defer wait.Stop()
	select {
	case <-done:
		return true
	case <-ctx.Done():
	case <-wait.C:
	case <-p.stopped:
	}
	return false
}

// refetchWait bounds a request's wait for a fetch by its deadline, keeping a quarter of the time
// left for the answer: a proxy whose ext_authz call times out applies its failure mode, and a
// mesh that fails open would then let through a token signed with a key nobody verified while
// the issuer hangs.
func refetchWait(ctx context.Context, wait time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)*3/4)
	}
	return max(wait, 0)
}

func (p *provider) statusSnapshot() ProviderStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.status
	s.KeyIDs = append([]string(nil), s.KeyIDs...)
	return s
}
