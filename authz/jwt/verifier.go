package jwt

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"go.opentelemetry.io/otel/metric"

	"github.com/portcullis/portcullis/xds/model"
)

// Defaults of Options.
const (
	DefaultCacheSize          = 10000
	DefaultFetchTimeout       = 10 * time.Second
	DefaultRetryBackoff       = time.Second
	DefaultMinRefetchInterval = 10 * time.Second
	DefaultRefetchWait        = time.Second
)

// Options configure a Verifier. Zero values take the defaults above.
type Options struct {
	Logger *slog.Logger
	Meter  metric.Meter
	// HTTPClient fetches JWKS URLs and OIDC discovery for providers without their own caFile.
	HTTPClient *http.Client
	// Now is the clock tokens are checked against.
	Now func() time.Time
	// CacheSize bounds the verified-token cache (entries).
	CacheSize int
	// FetchTimeout bounds one JWKS fetch (discovery included).
	FetchTimeout time.Duration
	// RetryBackoff is the first wait after a failed fetch; it doubles up to the refresh interval.
	RetryBackoff time.Duration
	// MinRefetchInterval is the least time between two fetches asked for by requests (a token
	// with an unknown key id, or a provider with no keys yet).
	MinRefetchInterval time.Duration
	// RefetchWait bounds how long such a request waits for the fetch.
	RefetchWait time.Duration
}

// Code says why a token was rejected; it is a metric label and appears in decision logs.
type Code string

// Rejection codes.
const (
	CodeOK            Code = "ok"
	CodeMalformed     Code = "malformed"
	CodeTooLarge      Code = "too_large"
	CodeUnknownIssuer Code = "unknown_issuer"
	CodeAlgorithm     Code = "algorithm_not_allowed"
	CodeNoKeys        Code = "no_keys"
	CodeUnknownKey    Code = "unknown_key"
	CodeSignature     Code = "bad_signature"
	CodeMissingExpiry Code = "missing_exp"
	CodeExpired       Code = "expired"
	CodeNotYetValid   Code = "not_yet_valid"
	CodeAudience      Code = "bad_audience"
	CodeClaims        Code = "bad_claims"
	// CodeAmbiguous: one location holds several tokens (its header sent twice, its cookie named
	// twice); the application might read another than the one verified.
	CodeAmbiguous Code = "ambiguous"
)

var codes = []Code{CodeOK, CodeMalformed, CodeTooLarge, CodeUnknownIssuer, CodeAlgorithm, CodeNoKeys,
	CodeUnknownKey, CodeSignature, CodeMissingExpiry, CodeExpired, CodeNotYetValid,
	CodeAudience, CodeClaims, CodeAmbiguous}

// Error is why a presented token was rejected. Its text never contains the token.
type Error struct {
	Code     Code
	Provider string // namespace/name of the provider that rejected it, when one was chosen
	Detail   string
}

func (e *Error) Error() string {
	if e.Provider != "" {
		return fmt.Sprintf("jwt: %s (provider %s): %s", e.Code, e.Provider, e.Detail)
	}
	return fmt.Sprintf("jwt: %s: %s", e.Code, e.Detail)
}

func reject(code Code, provider, format string, args ...any) *Error {
	return &Error{Code: code, Provider: provider, Detail: truncate(fmt.Sprintf(format, args...), 300)}
}

// Result is what Verify found in a request.
type Result struct {
	// Token is the verified token; nil when none was presented or one was rejected.
	Token *Token
	// Err is set when a token was presented and rejected: the request must be refused (401).
	Err *Error
	// Presented is true when the request carried a token in a location some provider reads.
	Presented bool
	// CacheHit is true when the verified-token cache answered.
	CacheHit bool
	// Issuer and KeyID as the token claims them (unverified when Err is set), for traces.
	Issuer string
	KeyID  string
}

// Verifier verifies tokens against the JWT providers of the live mesh. It is safe for concurrent
// use; Update swaps providers while Verify runs.
type Verifier struct {
	opts    Options
	metrics *metrics
	cache   *lru.Cache[[32]byte, *cacheEntry]
	set     atomic.Pointer[providerSet]

	buffers sync.Pool // token bytes for hashing

	mu      sync.Mutex // serialises Update and Close
	ctx     context.Context
	cancel  context.CancelFunc
	cancels map[*provider]context.CancelFunc
}

type cacheEntry struct {
	token    *Token
	loc      *location
	provs    []*provider
	gens     []uint64
	notAfter time.Time // expiry plus the smallest clock skew of the providers that accepted it
}

// providerSet is the immutable set of providers of one configuration.
type providerSet struct {
	providers     []*provider
	rootNamespace string
	// byNamespace is what requests for a namespace's destinations are read for: the locations of
	// its own providers and of the root namespace's. A namespace without providers of its own
	// has root.
	byNamespace map[string]*scope
	root        *scope
}

// scope is the locations read for the destinations of one namespace.
type scope struct {
	locations []*location
}

// location is one place tokens are looked for, with the providers that read it.
type location struct {
	id        uint32 // unique in its providerSet: part of the cache key
	header    string // lower-case header name, or "" for a cookie
	prefix    string
	cookie    string
	providers []*provider
}

// New returns a verifier with no providers; call Update with each mesh and Close when done.
func New(opts Options) (*Verifier, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.CacheSize = cmp.Or(opts.CacheSize, DefaultCacheSize)
	opts.FetchTimeout = cmp.Or(opts.FetchTimeout, DefaultFetchTimeout)
	opts.RetryBackoff = cmp.Or(opts.RetryBackoff, DefaultRetryBackoff)
	opts.MinRefetchInterval = cmp.Or(opts.MinRefetchInterval, DefaultMinRefetchInterval)
	opts.RefetchWait = cmp.Or(opts.RefetchWait, DefaultRefetchWait)
	cache, err := lru.New[[32]byte, *cacheEntry](opts.CacheSize)
	if err != nil {
		return nil, fmt.Errorf("jwt: %w", err)
	}
	v := &Verifier{opts: opts, cache: cache, cancels: map[*provider]context.CancelFunc{}}
	v.buffers.New = func() any { b := make([]byte, 0, 2048); return &b }
	v.ctx, v.cancel = context.WithCancel(context.Background())
	v.set.Store(newProviderSet(nil, ""))
	if v.metrics, err = newMetrics(opts.Meter, v); err != nil {
		return nil, err
	}
	return v, nil
}

// Update makes the mesh's JWTProvider documents the verifier's providers. Providers whose spec is
// unchanged keep running with their keys; new ones read file and inline keys before Update
// returns and fetch URLs in the background. A provider that cannot be built (say, an unreadable
// caFile) is reported, and its previous version, if any, stays.
func (v *Verifier) Update(m *model.Mesh) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ctx.Err() != nil {
		return errors.New("jwt: verifier is closed")
	}
	cur := v.set.Load()
	old := map[string]*provider{}
	for _, p := range cur.providers {
		old[p.name] = p
	}
	var next []*provider
	var errs []error
	root := m.RootNamespace()
	changed := root != cur.rootNamespace
	for _, doc := range m.JWTProviders {
		name := model.RefOf(doc).String()
		prev := old[name]
		delete(old, name)
		h, err := specHash(&doc.Spec)
		if err == nil && prev != nil && prev.specHash == h {
			next = append(next, prev)
			continue
		}
		p, err := newProvider(doc, &v.opts, v.metrics)
		if err != nil {
			errs = append(errs, err)
			if prev != nil {
				next = append(next, prev)
			}
			continue
		}
		changed = true
		if err := v.start(p); err != nil {
			errs = append(errs, err)
		}
		if prev != nil {
			v.stop(prev)
		}
		next = append(next, p)
	}
	for _, p := range old {
		changed = true
		v.stop(p)
	}
	if changed {
		v.set.Store(newProviderSet(next, root))
		// Locations and providers changed: cached verdicts may no longer hold.
		v.cache.Purge()
	}
	return errors.Join(errs...)
}

// start reads local keys at once, so tokens verify as soon as the mesh is live, and runs the
// refresh loop for sources that change. A file that is not there yet is not an error (it may be
// written later: the loop retries); inline keys that do not parse are.
func (v *Verifier) start(p *provider) error {
	if p.src.static() {
		// Inline keys never change: one read, and no retry of a set that cannot parse (Check
		// reports it before such a mesh goes live).
		defer close(p.stopped)
		if err := p.fetch(v.ctx); err != nil {
			return fmt.Errorf("jwt: provider %s: inline JWKS: %w", p.name, err)
		}
		return nil
	}
	fetched := false
	if _, file := p.src.(fileSource); file {
		fetched = p.fetch(v.ctx) == nil
	}
	ctx, cancel := context.WithCancel(v.ctx)
	v.cancels[p] = cancel
	go p.run(ctx, fetched)
	return nil
}

func (v *Verifier) stop(p *provider) {
	if cancel, ok := v.cancels[p]; ok {
		cancel()
		delete(v.cancels, p)
	}
}

// Close stops every provider's refresh loop and waits for them.
func (v *Verifier) Close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.cancel()
	for _, p := range v.set.Load().providers {
		<-p.stopped
	}
	if v.metrics.registration != nil {
		if err := v.metrics.registration.Unregister(); err != nil {
			v.opts.Logger.Warn("unregistering JWT metrics", "err", err)
		}
	}
}

// newProviderSet groups providers by the destinations they verify tokens for: a provider of
// namespace ns reads the requests for ns's destinations; one of the root namespace, every
// destination's. So a provider cannot make another tenant's requests fail, nor vouch for a token
// there.
func newProviderSet(ps []*provider, root string) *providerSet {
	slices.SortFunc(ps, func(a, b *provider) int { return cmp.Compare(a.name, b.name) })
	set := &providerSet{providers: ps, rootNamespace: root, byNamespace: map[string]*scope{}}
	var rootProviders []*provider
	byNamespace := map[string][]*provider{}
	for _, p := range ps {
		if p.namespace == root {
			rootProviders = append(rootProviders, p)
		} else {
			byNamespace[p.namespace] = append(byNamespace[p.namespace], p)
		}
	}
	var ids uint32
	set.root = newScope(rootProviders, &ids)
	for ns, own := range byNamespace {
		all := append(own, rootProviders...)
		slices.SortFunc(all, func(a, b *provider) int { return cmp.Compare(a.name, b.name) })
		set.byNamespace[ns] = newScope(all, &ids)
	}
	return set
}

// newScope makes the locations providers read, numbering them from *ids.
func newScope(ps []*provider, ids *uint32) *scope {
	sc := &scope{}
	find := func(header, prefix, cookie string) *location {
		for _, l := range sc.locations {
			if l.header == header && strings.EqualFold(l.prefix, prefix) && l.cookie == cookie {
				return l
			}
		}
		*ids++
		l := &location{id: *ids, header: header, prefix: prefix, cookie: cookie}
		sc.locations = append(sc.locations, l)
		return l
	}
	for _, p := range ps {
		for _, h := range p.spec.FromHeaders {
			l := find(strings.ToLower(h.Name), h.Prefix, "")
			l.providers = append(l.providers, p)
		}
		for _, c := range p.spec.FromCookies {
			l := find("", "", c)
			l.providers = append(l.providers, p)
		}
		if len(p.spec.FromHeaders) == 0 && len(p.spec.FromCookies) == 0 {
			l := find("authorization", "Bearer ", "")
			l.providers = append(l.providers, p)
		}
	}
	return sc
}

// scope returns the locations read for requests to destinations in namespace ns.
func (s *providerSet) scope(ns string) *scope {
	if sc, ok := s.byNamespace[ns]; ok {
		return sc
	}
	return s.root
}

// Covers reports whether any provider verifies tokens for destinations in namespace ns: one of
// ns or of the root namespace. Where none does, tokens are not looked at.
func (v *Verifier) Covers(ns string) bool { return len(v.set.Load().scope(ns).locations) > 0 }

// Status returns every provider's health, sorted by name.
func (v *Verifier) Status() []ProviderStatus {
	ps := v.set.Load().providers
	out := make([]ProviderStatus, len(ps))
	for i, p := range ps {
		out[i] = p.statusSnapshot()
	}
	return out
}

// CacheLen returns the number of verified tokens cached.
func (v *Verifier) CacheLen() int { return v.cache.Len() }

// Verify finds and verifies the tokens of a request for a destination in namespace ns, given
// its headers with lower-case names and every value of each. Only the providers of ns and of the
// root namespace look for tokens, and only they may verify one. Every token they find must
// verify; the first one found is the request's token. A location holding more than one token is
// refused (CodeAmbiguous).
func (v *Verifier) Verify(ctx context.Context, ns string, headers map[string][]string) Result {
	var res Result
	var seen [4]string
	n := 0
	for _, loc := range v.set.Load().scope(ns).locations {
		raw, ok, err := loc.extract(headers)
		if err != nil {
			v.metrics.verified(ctx, err.Code, false)
			return Result{Presented: true, Err: err}
		}
		if !ok || slices.Contains(seen[:n], raw) {
			continue
		}
		if n < len(seen) {
			seen[n] = raw
			n++
		}
		r := v.verify(ctx, loc, raw)
		code := CodeOK
		if r.Err != nil {
			code = r.Err.Code
		}
		v.metrics.verified(ctx, code, r.CacheHit)
		if r.Err != nil {
			return r
		}
		if res.Token == nil {
			res = r
		}
	}
	return res
}

// extract returns the token at this location of the request, if any. Two tokens at one
// location are an error (the same token twice is one token): servers disagree on which of two headers or cookies of one name they
// read, so verifying one says nothing about the other.
func (l *location) extract(headers map[string][]string) (token string, found bool, err *Error) {
	if l.cookie != "" {
		for _, h := range headers["cookie"] {
			if found, err = cookieValue(h, l.cookie, &token, found); err != nil {
				return "", false, err
			}
		}
		return token, found, nil
	}
	for _, v := range headers[l.header] {
		if len(v) < len(l.prefix) || !strings.EqualFold(v[:len(l.prefix)], l.prefix) {
			continue
		}
		if v = strings.TrimSpace(v[len(l.prefix):]); v == "" {
			continue
		}
		if found && v != token {
			return "", false, reject(CodeAmbiguous, "", "header %s carries more than one token", l.header)
		}
		token, found = v, true
	}
	return token, found, nil
}

// cookieValue looks for a cookie in a Cookie header ("a=1; b=2") without allocating, into
// token; found says whether an earlier header had it already.
func cookieValue(header, name string, token *string, found bool) (bool, *Error) {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ";")
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || k != name {
			continue
		}
		if val = strings.Trim(val, `"`); val == "" {
			continue
		}
		if found && val != *token {
			return false, reject(CodeAmbiguous, "", "cookie %s is set more than once", name)
		}
		*token, found = val, true
	}
	return found, nil
}

func (v *Verifier) verify(ctx context.Context, loc *location, raw string) Result {
	if len(raw) > MaxTokenBytes {
		return Result{Presented: true, Err: reject(CodeTooLarge, "", "token is %d bytes, more than the %d allowed", len(raw), MaxTokenBytes)}
	}
	now := v.opts.Now()
	key := v.hashToken(loc.id, raw)
	if e, ok := v.cache.Get(key); ok && e.loc == loc && e.current() {
		t := e.token
		if now.After(e.notAfter) {
			v.cache.Remove(key)
			return Result{Presented: true, CacheHit: true, Issuer: t.Issuer, KeyID: t.KeyID,
				Err: reject(CodeExpired, t.Providers[0], "token expired at %s", t.Expiry.Format(time.RFC3339))}
		}
		return Result{Presented: true, CacheHit: true, Token: t, Issuer: t.Issuer, KeyID: t.KeyID}
	}
	parsed, perr := parseCompact(raw)
	if perr != nil {
		return Result{Presented: true, Err: perr}
	}
	// What the token claims is the client's text: bounded before it reaches logs and spans.
	res := Result{Presented: true, Issuer: truncate(parsed.claims.issuer, 256), KeyID: truncate(parsed.header.Kid, 128)}
	var accepted []*provider
	var firstErr *Error
	notAfter := time.Time{}
	for _, p := range loc.providers {
		if p.spec.Issuer != parsed.claims.issuer {
			continue
		}
		if err := p.verify(ctx, raw, parsed, now); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		accepted = append(accepted, p)
		if na := parsed.claims.expiry.Add(p.skew); notAfter.IsZero() || na.Before(notAfter) {
			notAfter = na
		}
	}
	switch {
	case len(accepted) > 0:
	case firstErr != nil:
		res.Err = firstErr
		return res
	default:
		res.Err = reject(CodeUnknownIssuer, "", "no provider reading this location has issuer %q", truncate(parsed.claims.issuer, 200))
		return res
	}
	t := &Token{
		Issuer: parsed.claims.issuer, Subject: parsed.claims.subject, ID: parsed.claims.id, Audience: parsed.claims.audience,
		KeyID: parsed.header.Kid, Algorithm: parsed.header.Alg,
		Expiry: parsed.claims.expiry, NotBefore: parsed.claims.notBefore, IssuedAt: parsed.claims.issuedAt,
		Claims: NewClaims(parsed.raw),
	}
	e := &cacheEntry{token: t, loc: loc, provs: accepted, notAfter: notAfter}
	for _, p := range accepted {
		t.Providers = append(t.Providers, p.name)
		e.gens = append(e.gens, p.gen.Load())
	}
	slices.Sort(t.Providers)
	v.cache.Add(key, e)
	res.Token = t
	return res
}

// hashToken returns the SHA-256 of a location's id and a token, copying them into a pooled
// buffer: converting the string to a slice directly would allocate a copy per request. The id
// keeps the verdicts of different namespaces' providers apart, so a token that verifies in one
// namespace is not taken from the cache in another, and each keeps its own entry.
func (v *Verifier) hashToken(loc uint32, raw string) [32]byte {
	bp := v.buffers.Get().(*[]byte)
	b := binary.BigEndian.AppendUint32((*bp)[:0], loc)
	b = append(b, raw...)
	sum := sha256.Sum256(b)
	*bp = b
	v.buffers.Put(bp)
	return sum
}

// current reports whether the providers that accepted the token still have the keys they had.
func (e *cacheEntry) current() bool {
	for i, p := range e.provs {
		if p.gen.Load() != e.gens[i] {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
