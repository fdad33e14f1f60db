package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/translate"
)

// Build is one successful translation of a proxy's configuration, as the ledger records it.
type Build struct {
	// MeshVersion is the mesh the configuration was built from, and Documents the version of each
	// of its documents (DocumentVersions), one map shared by every proxy built from it.
	MeshVersion string
	Documents   map[string]string
	// Resources are the translated resources; their Sources name the documents behind each.
	Resources *translate.Resources
	// Versions are the versions published with the build, by type URL; nil when the build
	// changed nothing the proxy has.
	Versions map[string]string
}

// typeSet is a set of resource types, bit i standing for TypeURLs[i].
type typeSet uint8

// typeBit is url's bit, none for a type the snapshots do not carry (a proxy may ask for any).
func typeBit(url string) typeSet {
	i := slices.Index(TypeURLs, url)
	if i < 0 {
		return 0
	}
	return 1 << i
}

// Built records a successful translation of a proxy's configuration.
//
// A document's status asks which proxies have ACKed "the versions carrying its current
// version". Versions are content hashes with no order, and a type's version also moves for
// reasons that are not the document (endpoints, another document sharing a route), so the
// ledger numbers the mesh versions it sees (epochs) and keeps, per document, the epoch its
// current version arrived at, and per proxy and type, the last epoch the version it ACKed was
// built from. A proxy is programmed with a document when every type carrying it has its current
// version ACKed, or an older one still built from an epoch at or after the document's.
func (l *Ledger) Built(node string, b Build) {
	docs := documentTypes(b.Resources, b.Documents)
	l.mu.Lock()
	defer l.mu.Unlock()
	if b.MeshVersion != l.mesh {
		l.epoch++
		for doc, v := range b.Documents {
			if old, ok := l.docVersions[doc]; !ok || old != v {
				l.docSince[doc] = l.epoch
			}
		}
		for doc := range l.docSince {
			if _, ok := b.Documents[doc]; !ok {
				delete(l.docSince, doc)
			}
		}
		l.mesh, l.docVersions = b.MeshVersion, b.Documents
	}
	p := l.proxy(node)
	now := time.Now()
	for url, v := range b.Versions {
		t := p.typ(url)
		if t.Published == v {
			continue
		}
		if t.Published != "" && t.Acked == t.Published {
			t.ackedThrough = p.epoch // the replaced version was built from the proxy's last epoch
		}
		t.Published, t.PublishedAt = v, now
	}
	p.Error, p.MeshVersion, p.Sources, p.docs, p.epoch = "", b.MeshVersion, b.Resources.Sources, docs, l.epoch
	l.changed.Notify()
}

// Failed records why a proxy's configuration could not be built or published; it keeps its last
// good one, and counts as programmed with nothing until a build succeeds.
func (l *Ledger) Failed(node string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.proxy(node).Error = err.Error()
	l.changed.Notify()
}

// Changed returns a channel closed at the ledger's next change that can move a Documents count
// (a build, an ACK or NACK, a proxy connecting or leaving).
func (l *Ledger) Changed() <-chan struct{} { return l.changed.Changed() }

// DocumentCount is what one document's status says of the proxies one control plane serves.
type DocumentCount struct {
	// Proxies are the connected proxies whose configuration has a resource built from the
	// document (translate.Resources.Sources).
	Proxies int `json:"proxies"`
	// Programmed are those of them that have ACKed the configuration carrying its current
	// version.
	Programmed int `json:"programmed"`
	// Refused are those of them that refused (NACKed) it.
	Refused int `json:"refused,omitempty"`
}

// Documents counts, per document of the mesh version given ("Kind/namespace/name",
// translate.SourceName), the connected proxies it affects and those programmed with its current
// version. A document no connected proxy uses has no entry. It reports settled=false, and no
// counts, while a connected proxy's configuration is not yet built from that mesh version (its
// documents would be those of another mesh): ask again after the next Changed. One pass over the
// proxies and their documents; call it at most once per status pass.
func (l *Ledger) Documents(meshVersion string) (counts map[string]DocumentCount, settled bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	counts = map[string]DocumentCount{}
	for _, p := range l.proxies {
		if !p.Connected {
			continue
		}
		if p.Error == "" && p.MeshVersion != meshVersion {
			return nil, false
		}
		// The types whose current version the proxy has ACKed, and those it refused.
		var acked, refused typeSet
		for url, t := range p.Types {
			switch {
			case t.Published != "" && t.Acked == t.Published:
				acked |= typeBit(url)
			case t.Published != "" && t.Nacked == t.Published:
				refused |= typeBit(url)
			}
		}
		for doc, types := range p.docs {
			c := counts[doc]
			c.Proxies++
			switch {
			case p.Error == "" && l.programmed(p, doc, types, acked):
				c.Programmed++
			case types&refused != 0:
				c.Refused++
			}
			counts[doc] = c
		}
	}
	return counts, true
}

// programmed reports whether p has ACKed, for every type carrying doc, either the current
// version or one built from an epoch at or after the one doc's current version arrived at.
func (l *Ledger) programmed(p *ProxyStatus, doc string, types, acked typeSet) bool {
	pending := types &^ acked
	if pending == 0 {
		return true
	}
	since := l.docSince[doc]
	for i, url := range TypeURLs {
		if pending&(1<<i) == 0 {
			continue
		}
		if t := p.Types[url]; t == nil || t.Acked == "" || t.ackedThrough < since {
			return false
		}
	}
	return true
}

// documentTypes maps each document of the mesh behind a proxy's resources to the types of the
// resources built from it.
func documentTypes(res *translate.Resources, versions map[string]string) map[string]typeSet {
	out := map[string]typeSet{}
	add := func(url, name string) {
		for _, doc := range res.Sources[name] {
			if _, ok := versions[doc]; ok { // documents of the mesh (not an agent's registration)
				out[doc] |= typeBit(url)
			}
		}
	}
	for _, r := range res.Clusters {
		add(TypeURLs[0], r.GetName())
	}
	for _, r := range res.Endpoints {
		add(TypeURLs[1], r.GetClusterName())
	}
	for _, r := range res.Listeners {
		add(TypeURLs[2], r.GetName())
	}
	for _, r := range res.Routes {
		add(TypeURLs[3], r.GetName())
	}
	for _, r := range res.Extensions {
		add(TypeURLs[4], r.GetName())
	}
	return out
}

// DocumentVersions returns a content version of every document of a mesh, by
// translate.SourceName: what tells the ledger which documents a new mesh version changed.
func DocumentVersions(m *model.Mesh) map[string]string {
	out := map[string]string{}
	add := func(o model.Object) {
		b, err := json.Marshal(o)
		if err != nil {
			return // plain structs: cannot fail
		}
		sum := sha256.Sum256(b)
		out[translate.SourceName(o)] = hex.EncodeToString(sum[:12])
	}
	add(m.Config)
	for _, d := range m.Services {
		add(d)
	}
	for _, d := range m.Workloads {
		add(d)
	}
	for _, d := range m.JWTProviders {
		add(d)
	}
	for _, d := range m.AuthorizationPolicies {
		add(d)
	}
	for _, d := range m.RateLimitPolicies {
		add(d)
	}
	return out
}
