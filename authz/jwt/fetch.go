package jwt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/portcullis/portcullis/xds/model"
)

// maxJWKSBytes bounds a fetched JWKS or discovery document.
const maxJWKSBytes = 1 << 20

// keySource is where a provider's JWKS comes from.
type keySource interface {
	fetch(ctx context.Context) ([]byte, error)
	// static sources never change, so they are read once.
	static() bool
	String() string
}

type inlineSource struct{ data string }

func (s inlineSource) fetch(context.Context) ([]byte, error) { return []byte(s.data), nil }
func (inlineSource) static() bool                            { return true }
func (inlineSource) String() string                          { return "inline" }

type fileSource struct{ path string }

func (s fileSource) fetch(context.Context) ([]byte, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", s.path, err)
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", s.path, maxJWKSBytes)
	}
	return data, nil
}
func (fileSource) static() bool     { return false }
func (s fileSource) String() string { return "file " + s.path }

type urlSource struct {
	url    string
	client *http.Client
}

func (s urlSource) fetch(ctx context.Context) ([]byte, error) { return get(ctx, s.client, s.url) }
func (urlSource) static() bool                                { return false }
func (s urlSource) String() string                            { return "uri " + s.url }

// oidcSource discovers the JWKS URL from the issuer's OpenID configuration on every fetch, so a
// moved jwks_uri is followed.
type oidcSource struct {
	issuer string
	client *http.Client
}

func (s oidcSource) fetch(ctx context.Context) ([]byte, error) {
	conf, err := get(ctx, s.client, strings.TrimSuffix(s.issuer, "/")+"/.well-known/openid-configuration")
	if err != nil {
		return nil, fmt.Errorf("OIDC discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(conf, &doc); err != nil {
		return nil, fmt.Errorf("OIDC discovery: not JSON: %w", err)
	}
	// OpenID Connect Discovery 1.0 §4.3: the document's issuer must be the one asked about.
	if doc.Issuer != s.issuer {
		return nil, fmt.Errorf("OIDC discovery: document names issuer %q, not %q", doc.Issuer, s.issuer)
	}
	if err := checkFetchURL(doc.JWKSURI); err != nil {
		return nil, fmt.Errorf("OIDC discovery: jwks_uri: %w", err)
	}
	return get(ctx, s.client, doc.JWKSURI)
}
func (oidcSource) static() bool     { return false }
func (s oidcSource) String() string { return "oidc " + s.issuer }

// checkFetchURL allows https anywhere and plain http on loopback only (as model validation does
// for configured URLs; discovered ones are checked here).
func checkFetchURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("not an absolute URL: %q", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("must be https (plain http only on loopback): %q", raw)
}

func get(ctx context.Context, c *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain a little so the connection can be reused for the retry.
		if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 4096)); err != nil {
			return nil, fmt.Errorf("GET %s: %s (and reading the body: %v)", u, resp.Status, err)
		}
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("GET %s: response larger than %d bytes", u, maxJWKSBytes)
	}
	return data, nil
}

// newKeySource builds the source a provider spec names. httpClient is used for URL sources
// unless the spec names its own CA file.
func newKeySource(spec *model.JWTProviderSpec, httpClient *http.Client, timeout time.Duration) (keySource, error) {
	j := &spec.JWKS
	switch {
	case j.Inline != "":
		return inlineSource{j.Inline}, nil
	case j.File != "":
		return fileSource{j.File}, nil
	}
	client := httpClient
	if j.CAFile != "" || client == nil {
		var err error
		if client, err = newHTTPClient(j.CAFile, timeout); err != nil {
			return nil, err
		}
	}
	if j.URI != "" {
		if err := checkFetchURL(j.URI); err != nil {
			return nil, err
		}
		return urlSource{j.URI, client}, nil
	}
	if j.OIDCDiscovery {
		if err := checkFetchURL(spec.Issuer); err != nil {
			return nil, fmt.Errorf("issuer: %w", err)
		}
		return oidcSource{spec.Issuer, client}, nil
	}
	return nil, errors.New("no JWKS source (file, inline, uri or oidcDiscovery)")
}

// newHTTPClient returns a client for JWKS fetches: TLS 1.2+, the system roots or those of
// caFile, a time limit, and redirects only to URLs checkFetchURL allows.
func newHTTPClient(caFile string, timeout time.Duration) (*http.Client, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadCAFile(caFile)
		if err != nil {
			return nil, err
		}
		tlsConf.RootCAs = pool
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tlsConf,
			TLSHandshakeTimeout: timeout,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			return checkFetchURL(req.URL.String())
		},
	}, nil
}

func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("caFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("caFile %s: no PEM certificate", path)
	}
	return pool, nil
}
