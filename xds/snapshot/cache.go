package snapshot

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

// Cache is go-control-plane's snapshot cache, except that a proxy that refused (NACKed) a version
// is not sent that same version again. The stock cache answers a NACK at once with the current
// snapshot because the NACK names the proxy's previous version, so a proxy refusing the current
// config is sent it again, forever (go-control-plane#962). Here the refused version counts as
// "known" to the proxy: its watch opens and fires only when a different version is published.
type Cache struct {
	cache.SnapshotCache
	ledger *Ledger
}

// NewCache wraps a snapshot cache; NACKs are looked up in ledger.
func NewCache(c cache.SnapshotCache, ledger *Ledger) *Cache {
	return &Cache{SnapshotCache: c, ledger: ledger}
}

// CreateWatch opens a state-of-the-world watch, holding back a version the proxy has refused.
func (c *Cache) CreateWatch(req *cache.Request, sub cache.Subscription, ch chan cache.Response) (func(), error) {
	if req.GetErrorDetail() != nil {
		node := req.GetNode().GetId()
		if refused := c.ledger.NackedVersion(node, req.GetTypeUrl()); refused != "" && refused == c.currentVersion(node, req.GetTypeUrl()) {
			held := proto.Clone(req).(*cache.Request)
			held.VersionInfo = refused
			return c.SnapshotCache.CreateWatch(held, sub, ch)
		}
	}
	return c.SnapshotCache.CreateWatch(req, sub, ch)
}

func (c *Cache) currentVersion(node, typeURL string) string {
	snap, err := c.GetSnapshot(node)
	if err != nil {
		return ""
	}
	return snap.GetVersion(typeURL)
}
