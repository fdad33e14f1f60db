package snapshot

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/portcullis/portcullis/telemetry/watch"
)

// TypeStatus is what one proxy has of one resource type.
type TypeStatus struct {
	// Requested says the proxy asked for this type on its current stream (a proxy with no EDS
	// clusters never asks for endpoints, and is in sync without them).
	Requested bool `json:"requested,omitempty"`
	// Version published for the proxy (what the control plane wants it to have).
	Published string `json:"published,omitempty"`
	// Sent is the version last sent on the proxy's stream.
	Sent string `json:"sent,omitempty"`
	// Acked is the version the proxy last accepted.
	Acked   string    `json:"acked,omitempty"`
	AckedAt time.Time `json:"ackedAt,omitzero"`
	// Nacked is the version the proxy last refused, with Envoy's reason. Cleared by a later ACK of
	// a newer version.
	Nacked    string `json:"nacked,omitempty"`
	NackError string `json:"nackError,omitempty"`
	// NackDocuments are the documents behind the resources Envoy's error names.
	NackDocuments []string  `json:"nackDocuments,omitempty"`
	NackedAt      time.Time `json:"nackedAt,omitzero"`
	PublishedAt   time.Time `json:"publishedAt,omitzero"`
	// ackedThrough is, once Published has replaced the version the proxy had ACKed, the last mesh
	// epoch that ACKed version was built from (Documents).
	ackedThrough uint64
}

// ProxyStatus is the ledger entry of one proxy.
type ProxyStatus struct {
	Node        string                 `json:"node"`
	Identity    string                 `json:"identity,omitempty"`
	Connected   bool                   `json:"connected"`
	ConnectedAt time.Time              `json:"connectedAt,omitzero"`
	Delta       bool                   `json:"delta,omitempty"`
	Types       map[string]*TypeStatus `json:"types"`
	// Error is why the proxy has no current configuration (translation or registration failed);
	// it keeps its last good one.
	Error string `json:"error,omitempty"`
	// MeshVersion is the mesh its current configuration was built from.
	MeshVersion string `json:"meshVersion,omitempty"`
	// Sources maps resource names to the documents they were built from, to explain NACKs.
	Sources map[string][]string `json:"-"`
	// docs are the mesh's documents behind its resources, each with the types carrying it, and
	// epoch the mesh epoch its configuration was last built from (Documents).
	docs  map[string]typeSet
	epoch uint64
}

// Synced reports whether the proxy has ACKed everything published for it.
func (p *ProxyStatus) Synced() bool {
	for _, t := range p.Types {
		if t.Requested && t.Published != "" && t.Acked != t.Published {
			return false
		}
	}
	return true
}

// Ledger is the per-proxy record of published, sent, ACKed and NACKed versions.
type Ledger struct {
	mu      sync.Mutex
	proxies map[string]*ProxyStatus
	// nonces maps stream → nonce → what was sent with it, to know which version a NACK refers to.
	nonces map[int64]map[string]sentResponse

	// The mesh proxies were last built from, a counter of the mesh versions seen (its epoch), and
	// the version of each of its documents with the epoch it arrived at (Documents).
	mesh        string
	epoch       uint64
	docVersions map[string]string
	docSince    map[string]uint64
	changed     watch.Signal

	acks, nacks metric.Int64Counter
	convergence metric.Float64Histogram
}

// NewLedger returns an empty ledger reporting to meter (nil for none).
func NewLedger(meter metric.Meter) (*Ledger, error) {
	l := &Ledger{proxies: map[string]*ProxyStatus{}, nonces: map[int64]map[string]sentResponse{}, docSince: map[string]uint64{}}
	if meter == nil {
		return l, nil
	}
	var err error
	if l.acks, err = meter.Int64Counter("portcullis_xds_acks", metric.WithDescription("xDS responses accepted by proxies, by type.")); err != nil {
		return nil, err
	}
	if l.nacks, err = meter.Int64Counter("portcullis_xds_nacks", metric.WithDescription("xDS responses refused by proxies, by type.")); err != nil {
		return nil, err
	}
	if l.convergence, err = meter.Float64Histogram("portcullis_xds_convergence_seconds",
		metric.WithDescription("Time from publishing a version for a proxy to its ACK."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Ledger) proxy(node string) *ProxyStatus {
	p, ok := l.proxies[node]
	if !ok {
		p = &ProxyStatus{Node: node, Types: map[string]*TypeStatus{}}
		l.proxies[node] = p
	}
	return p
}

func (p *ProxyStatus) typ(url string) *TypeStatus {
	t, ok := p.Types[url]
	if !ok {
		t = &TypeStatus{}
		p.Types[url] = t
	}
	return t
}

// Connected records that a proxy opened a stream with the given identity.
func (l *Ledger) Connected(node, identity string, delta bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.proxy(node)
	p.Connected, p.ConnectedAt, p.Identity, p.Delta = true, time.Now(), identity, delta
	// A new stream starts from nothing sent or requested.
	for _, t := range p.Types {
		t.Sent, t.Requested = "", false
	}
	l.changed.Notify()
}

// Disconnected records that a proxy's stream closed.
func (l *Ledger) Disconnected(node string, stream int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.nonces, stream)
	if p, ok := l.proxies[node]; ok {
		p.Connected = false
	}
	l.changed.Notify()
}

// Forget drops a proxy that is gone for good (its registration expired).
func (l *Ledger) Forget(node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.proxies, node)
	l.changed.Notify()
}

// ForgetExcept drops every proxy not in keep (the registered ones).
func (l *Ledger) ForgetExcept(keep map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for node := range l.proxies {
		if !keep[node] {
			delete(l.proxies, node)
			l.changed.Notify()
		}
	}
}

// Sent records a response sent on a stream.
func (l *Ledger) Sent(node string, stream int64, typeURL, version, nonce string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sent := l.nonces[stream]
	if sent == nil {
		sent = map[string]sentResponse{}
		l.nonces[stream] = sent
	}
	// Keep the latest nonce per type only: a request answering an older one is stale.
	for n, r := range sent {
		if r.typeURL == typeURL {
			delete(sent, n)
		}
	}
	sent[nonce] = sentResponse{typeURL, version}
	l.proxy(node).typ(typeURL).Sent = version
}

// Requested records that the proxy asked for a type.
func (l *Ledger) Requested(node, typeURL string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.proxy(node).typ(typeURL).Requested = true
}

// Acked records a request that accepts the version it names.
func (l *Ledger) Acked(node, typeURL, version string) {
	l.mu.Lock()
	t := l.proxy(node).typ(typeURL)
	first := t.Acked != version
	t.Acked, t.AckedAt = version, time.Now()
	if t.Nacked != "" && t.Nacked != version {
		t.Nacked, t.NackError, t.NackDocuments, t.NackedAt = "", "", nil, time.Time{}
	}
	published, publishedAt := t.Published, t.PublishedAt
	l.changed.Notify()
	l.mu.Unlock()
	if first && l.acks != nil {
		attrs := metric.WithAttributes(attribute.String("type", shortType(typeURL)))
		l.acks.Add(context.Background(), 1, attrs)
		if version == published && !publishedAt.IsZero() {
			l.convergence.Record(context.Background(), time.Since(publishedAt).Seconds(), attrs)
		}
	}
}

// Nack is what a recorded NACK refers to.
type Nack struct {
	// Version refused ("" when the nonce is unknown, e.g. from before a control-plane restart).
	Version string
	// Documents that produced the resources Envoy's error names, "Kind/namespace/name".
	Documents []string
}

// Nacked records a request refusing the response with the given nonce.
func (l *Ledger) Nacked(node string, stream int64, typeURL, nonce, detail string) Nack {
	l.mu.Lock()
	var n Nack
	if r, ok := l.nonces[stream][nonce]; ok && r.typeURL == typeURL {
		n.Version = r.version
	}
	p := l.proxy(node)
	for resource, docs := range p.Sources {
		if strings.Contains(detail, resource) {
			for _, d := range docs {
				if !slices.Contains(n.Documents, d) {
					n.Documents = append(n.Documents, d)
				}
			}
		}
	}
	slices.Sort(n.Documents)
	t := p.typ(typeURL)
	first := t.Nacked != n.Version || t.NackError != detail
	t.Nacked, t.NackError, t.NackDocuments, t.NackedAt = n.Version, detail, n.Documents, time.Now()
	l.changed.Notify()
	l.mu.Unlock()
	if first && l.nacks != nil {
		l.nacks.Add(context.Background(), 1, metric.WithAttributes(attribute.String("type", shortType(typeURL))))
	}
	return n
}

// NackedVersion returns the version of a type the proxy refused last, if it still refuses it.
func (l *Ledger) NackedVersion(node, typeURL string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.proxies[node]; ok {
		if t, ok := p.Types[typeURL]; ok {
			return t.Nacked
		}
	}
	return ""
}

// Status returns a copy of every proxy's ledger entry, sorted by node.
func (l *Ledger) Status() []ProxyStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ProxyStatus, 0, len(l.proxies))
	for _, p := range l.proxies {
		c := *p
		c.Types = make(map[string]*TypeStatus, len(p.Types))
		for k, v := range p.Types {
			tc := *v
			c.Types[k] = &tc
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int { return strings.Compare(a.Node, b.Node) })
	return out
}

type sentResponse struct{ typeURL, version string }

// shortType turns "type.googleapis.com/envoy.config.cluster.v3.Cluster" into "Cluster".
func shortType(url string) string { return url[strings.LastIndexAny(url, "./")+1:] }

// AckedNonce records a delta request accepting the response with the given nonce (delta
// requests name the nonce, not a version).
func (l *Ledger) AckedNonce(node string, stream int64, typeURL, nonce string) {
	l.mu.Lock()
	r, ok := l.nonces[stream][nonce]
	l.mu.Unlock()
	if ok && r.typeURL == typeURL {
		l.Acked(node, typeURL, r.version)
	}
}
