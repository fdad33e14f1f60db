package apikey

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/xds/model"
)

// Reason says why a presented key was refused. It is logged and traced; clients see only the
// status.
type Reason string

// Reasons of a refusal.
const (
	ReasonMalformed   Reason = "malformed"     // not pck_<id>_<secret>, or the header came twice
	ReasonUnknownID   Reason = "unknown_id"    // no provider acting on the destination has the id
	ReasonWrongSecret Reason = "wrong_secret"  // the id exists; the secret does not match
	ReasonExpired     Reason = "expired"       // past its expires
	ReasonNotYetValid Reason = "not_yet_valid" // before its notBefore
	ReasonRevoked     Reason = "revoked"       // marked revoked in its provider
)

// Key is a verified key: who holds it and what the provider says about them. It is shared
// between requests; nobody may modify it.
type Key struct {
	// ID is the key's public id.
	ID string
	// Provider is the APIKeyProvider that verified it, "namespace/name".
	Provider string
	// Identity is who holds the key.
	Identity   string
	Attributes map[string][]string
}

// Result is the outcome of Verify.
type Result struct {
	// Presented is true when the request carried a value in a key header of the destination's
	// providers.
	Presented bool
	// ID is the id of a well-formed key (public; "" for a malformed one).
	ID string
	// Key is the verified key; nil when none was presented or it was refused.
	Key *Key
	// Reason is why a presented key was refused; "" when it was verified.
	Reason Reason
}

// entry is one key of one provider, ready to verify.
type entry struct {
	key       *Key
	salt      []byte
	digest    []byte
	notBefore time.Time
	expires   time.Time
	revoked   bool
}

// scope is what verifies keys for the destinations of one namespace: its providers' and the
// root namespace's.
type scope struct {
	headers []string // lower case, each once, in provider order
	// byHeader holds the keys of the providers reading each header, by id: an id may be in the
	// namespace's and the root namespace's providers.
	byHeader map[string]map[string][]*entry
}

type keySet struct {
	root     string
	byNS     map[string]*scope
	rootOnly *scope
	status   []ProviderStatus
}

// Verifier verifies the API keys of requests against the live mesh's providers. It is safe
// for concurrent use; Update replaces its keys atomically.
type Verifier struct {
	set atomic.Pointer[keySet]
}

// New returns a verifier with no providers.
func New() *Verifier {
	v := &Verifier{}
	v.set.Store(&keySet{byNS: map[string]*scope{}, rootOnly: &scope{}})
	return v
}

// Update takes the providers of a built mesh.
func (v *Verifier) Update(m *model.Mesh) {
	root := m.RootNamespace()
	byNS := map[string][]*model.APIKeyProviderDoc{}
	var rootProviders []*model.APIKeyProviderDoc
	ks := &keySet{root: root, byNS: map[string]*scope{}}
	for _, p := range m.APIKeyProviders {
		ns := model.RefOf(p).Namespace
		if ns == root {
			rootProviders = append(rootProviders, p)
		} else {
			byNS[ns] = append(byNS[ns], p)
		}
		ks.status = append(ks.status, providerStatus(p))
	}
	ks.rootOnly = newScope(rootProviders)
	for ns, ps := range byNS {
		ks.byNS[ns] = newScope(append(ps, rootProviders...))
	}
	v.set.Store(ks)
}

func newScope(ps []*model.APIKeyProviderDoc) *scope {
	s := &scope{byHeader: map[string]map[string][]*entry{}}
	for _, p := range ps {
		byID := s.byHeader[p.Spec.Header]
		if byID == nil {
			s.headers = append(s.headers, p.Spec.Header)
			byID = map[string][]*entry{}
			s.byHeader[p.Spec.Header] = byID
		}
		name := model.RefOf(p).String()
		for i := range p.Spec.Keys {
			k := &p.Spec.Keys[i]
			salt, digest, err := model.ParseAPIKeyHash(k.Hash)
			if err != nil {
				continue // Build validated it: unreachable
			}
			nbf, exp := k.Validity()
			byID[k.ID] = append(byID[k.ID], &entry{
				key:  &Key{ID: k.ID, Provider: name, Identity: k.Identity, Attributes: k.Attributes},
				salt: salt, digest: digest, notBefore: nbf, expires: exp, revoked: k.Revoked,
			})
		}
	}
	return s
}

func (ks *keySet) scope(ns string) *scope {
	if s, ok := ks.byNS[ns]; ok {
		return s
	}
	return ks.rootOnly
}

// Covers reports whether any provider acts on destinations in namespace ns.
func (v *Verifier) Covers(ns string) bool { return len(v.set.Load().scope(ns).headers) > 0 }

// Verify finds and verifies the key of a request for a destination in namespace ns. headers
// have lower-case names. A request without a key in any header of the destination's
// providers is not refused: Presented is false and policies decide.
func (v *Verifier) Verify(ns string, headers map[string][]string, now time.Time) Result {
	s := v.set.Load().scope(ns)
	for _, h := range s.headers {
		vals := headers[h]
		if h == "authorization" {
			vals = apiKeySchemeValues(vals)
		}
		switch len(vals) {
		case 0:
			continue
		case 1:
			return verify(s.byHeader[h], vals[0], now)
		}
		// Servers disagree on which of two values they read: verifying one says nothing of
		// the other.
		return Result{Presented: true, Reason: ReasonMalformed}
	}
	return Result{}
}

// apiKeySchemeValues returns the credentials of the Authorization values with the ApiKey scheme
// (case-insensitive); other schemes (a Bearer token) are not API keys.
func apiKeySchemeValues(vals []string) []string {
	var out []string
	scheme := model.APIKeyAuthorizationScheme
	for _, v := range vals {
		if len(v) >= len(scheme) && strings.EqualFold(v[:len(scheme)], scheme) {
			out = append(out, strings.TrimLeft(v[len(scheme):], " "))
		}
	}
	return out
}

func verify(byID map[string][]*entry, text string, now time.Time) Result {
	id, secret, err := Parse(text)
	if err != nil {
		return Result{Presented: true, Reason: ReasonMalformed}
	}
	r := Result{Presented: true, ID: id, Reason: ReasonUnknownID}
	for _, e := range byID[id] {
		if !Matches(e.salt, e.digest, secret) {
			r.Reason = ReasonWrongSecret
			continue
		}
		// Only the holder of the secret learns (in the log they cannot read) why a real key
		// was refused.
		switch {
		case e.revoked:
			r.Reason = ReasonRevoked
		case now.Before(e.notBefore):
			r.Reason = ReasonNotYetValid
		case !now.Before(e.expires):
			r.Reason = ReasonExpired
		default:
			return Result{Presented: true, ID: id, Key: e.key}
		}
		return r
	}
	return r
}

// ProviderStatus is a provider as /debug/authz shows it: counts, never keys or hashes.
type ProviderStatus struct {
	Provider string `json:"provider"`
	Header   string `json:"header"`
	Keys     int    `json:"keys"`
	Revoked  int    `json:"revoked"`
}

func providerStatus(p *model.APIKeyProviderDoc) ProviderStatus {
	st := ProviderStatus{Provider: model.RefOf(p).String(), Header: p.Spec.Header, Keys: len(p.Spec.Keys)}
	for _, k := range p.Spec.Keys {
		if k.Revoked {
			st.Revoked++
		}
	}
	return st
}

// Status lists the live providers.
func (v *Verifier) Status() []ProviderStatus {
	return append([]ProviderStatus{}, v.set.Load().status...)
}
