package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
)

// dnsLabel is what Kubernetes accepts as a namespace or service account name.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// TokenRequest names the workload a join token is for and the control plane it joins.
type TokenRequest struct {
	CA                                 CATarget // the control plane's CA bundle and token key
	Service, Namespace, ServiceAccount string   // ServiceAccount "" is the service name
	TTL                                time.Duration
}

// CreateToken signs a single-use join token bound to the workload's SPIFFE ID, carrying the pins
// of the trust bundle's roots.
func CreateToken(ctx context.Context, r TokenRequest) (string, *attest.Token, error) {
	if r.ServiceAccount == "" {
		r.ServiceAccount = r.Service
	}
	for name, v := range map[string]string{"--service": r.Service, "--namespace": r.Namespace, "--service-account": r.ServiceAccount} {
		if !dnsLabel.MatchString(v) {
			return "", nil, fmt.Errorf("%s %q is not a DNS label (lower-case letters, digits and '-')", name, v)
		}
	}
	if err := r.CA.Check(); err != nil {
		return "", nil, err
	}
	now := time.Now()
	td, roots, key, err := r.CA.tokenMaterial(ctx, now)
	if err != nil {
		return "", nil, err
	}
	id, err := spiffeid.FromSegments(td, "ns", r.Namespace, "sa", r.ServiceAccount)
	if err != nil {
		return "", nil, err
	}
	pins := make([]string, len(roots))
	for i, r := range roots {
		pins[i] = ca.Pin(r)
	}
	return attest.Create(key, attest.Request{SPIFFEID: id, Service: r.Service, TTL: r.TTL, Pins: pins, Now: now})
}

// WriteSecretFile creates (or truncates) path with mode 0600 whatever the umask, and refuses an
// existing file that others can read.
func WriteSecretFile(path, content string) error {
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s exists with mode %s; a token file must be private (0600)", path, st.Mode().Perm())
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(content)
	return errors.Join(err, f.Close())
}
