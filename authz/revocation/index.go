package revocation

import (
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/xds/model"
)

// Entry is one revocation as the index keeps it, with what names it in logs.
type Entry struct {
	// Document is the CredentialRevocation's namespace/name; Position its index in spec.jwts.
	Document string
	Position int
	// IssuedBefore is zero for an entry naming one token by jti.
	IssuedBefore time.Time
	Expires      time.Time
	Reason       string
}

// Field is the entry's field path in its document ("spec.jwts[3]").
func (e *Entry) Field() string { return "spec.jwts[" + strconv.Itoa(e.Position) + "]" }

// key is what a token is looked up by: the namespace whose providers the entry governs (the root
// namespace's entries govern all), the issuer, and the jti or the subject.
type key struct {
	namespace, issuer, value string
}

// Index is the revocations of one mesh. It is immutable, and a nil Index revokes nothing.
type Index struct {
	root      string
	byJTI     map[key][]*Entry
	bySubject map[key][]*Entry
	entries   int
}

// New indexes the mesh's CredentialRevocation documents. Entries already expired are left out;
// the rest are checked against the clock at each lookup, since they expire between mesh
// versions.
func New(m *model.Mesh, now time.Time) *Index {
	x := &Index{root: m.RootNamespace(), byJTI: map[key][]*Entry{}, bySubject: map[key][]*Entry{}}
	for _, d := range m.CredentialRevocations {
		ref := model.RefOf(d)
		for i := range d.Spec.JWTs {
			r := &d.Spec.JWTs[i]
			if !r.Live(now) {
				continue
			}
			e := &Entry{Document: ref.String(), Position: i, Expires: r.Expires.Time, Reason: r.Reason}
			if r.JTI != "" {
				k := key{ref.Namespace, r.Issuer, r.JTI}
				x.byJTI[k] = append(x.byJTI[k], e)
			} else {
				e.IssuedBefore = r.IssuedBefore.Time
				k := key{ref.Namespace, r.Issuer, r.Subject}
				x.bySubject[k] = append(x.bySubject[k], e)
			}
			x.entries++
		}
	}
	return x
}

// Len returns the number of entries indexed (those not expired when the index was built).
func (x *Index) Len() int {
	if x == nil {
		return 0
	}
	return x.entries
}

// Revoked returns the entry that revokes a verified token at now, or nil. A subject entry
// revokes the subject's tokens issued strictly before its time, and those without an "iat":
// nothing shows they are newer.
func (x *Index) Revoked(t *jwt.Token, now time.Time) *Entry {
	if x.Len() == 0 || t == nil {
		return nil
	}
	if e := x.lookup(x.root, t, now); e != nil {
		return e
	}
	// Providers are sorted by namespace/name: each namespace once, usually one lookup.
	prev := ""
	for _, p := range t.Providers {
		ns, _, _ := strings.Cut(p, "/")
		if ns == x.root || ns == prev {
			continue
		}
		prev = ns
		if e := x.lookup(ns, t, now); e != nil {
			return e
		}
	}
	return nil
}

func (x *Index) lookup(ns string, t *jwt.Token, now time.Time) *Entry {
	if t.ID != "" {
		for _, e := range x.byJTI[key{ns, t.Issuer, t.ID}] {
			if now.Before(e.Expires) {
				return e
			}
		}
	}
	if t.Subject != "" {
		for _, e := range x.bySubject[key{ns, t.Issuer, t.Subject}] {
			if now.Before(e.Expires) && (t.IssuedAt.IsZero() || t.IssuedAt.Before(e.IssuedBefore)) {
				return e
			}
		}
	}
	return nil
}
