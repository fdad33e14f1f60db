package policytest

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/xds/model"
)

// RequestSpec is a request written in YAML, for policy tests and `portcullis policy explain`:
//
//	source: {principal: spiffe://portcullis.local/ns/demo/sa/frontend, address: 10.0.0.7}
//	destination: {service: backend, namespace: demo, port: 8080}
//	method: GET
//	path: /api/items?page=2
//	headers: {x-tenant: acme, x-debug: ["0", "1"]}
//	time: 2026-01-05T10:00:00Z
//	jwt: {providers: [demo-idp], claims: {sub: alice, realm_access: {roles: [admin]}}}
//	apiKey: {provider: batch-clients, identity: batch-exporter, attributes: {scopes: [export]}}
type RequestSpec struct {
	Source struct {
		Principal string `yaml:"principal" json:"principal,omitempty"`
		Address   string `yaml:"address" json:"address,omitempty"`
	} `yaml:"source" json:"source"`
	Destination struct {
		Service   string `yaml:"service" json:"service,omitempty"`
		Namespace string `yaml:"namespace" json:"namespace,omitempty"`
		Principal string `yaml:"principal" json:"principal,omitempty"`
		Port      uint32 `yaml:"port" json:"port,omitempty"`
	} `yaml:"destination" json:"destination"`
	// Method is GET and Path "/" unless set; Path may carry a query and is normalised like a
	// real request's.
	Method   string `yaml:"method" json:"method,omitempty"`
	Path     string `yaml:"path" json:"path,omitempty"`
	Host     string `yaml:"host" json:"host,omitempty"`
	Scheme   string `yaml:"scheme" json:"scheme,omitempty"`
	Protocol string `yaml:"protocol" json:"protocol,omitempty"`
	SNI      string `yaml:"sni" json:"sni,omitempty"`
	// Headers are values by name: one value, or a list for a header sent more than once.
	Headers map[string]HeaderValues `yaml:"headers" json:"headers,omitempty"`
	// Time is RFC 3339; the time of the run unless set.
	Time   string      `yaml:"time" json:"time,omitempty"`
	JWT    *JWTSpec    `yaml:"jwt" json:"jwt,omitempty"`
	APIKey *APIKeySpec `yaml:"apiKey" json:"apiKey,omitempty"`
}

// APIKeySpec is a verified API key given by what its provider binds to it (key verification
// has tests of its own).
type APIKeySpec struct {
	// Provider that verified it: "name" (in the destination's namespace) or "namespace/name".
	Provider string `yaml:"provider" json:"provider"`
	// ID is the key's id; "test-key" unless set.
	ID         string              `yaml:"id" json:"id,omitempty"`
	Identity   string              `yaml:"identity" json:"identity"`
	Attributes map[string][]string `yaml:"attributes" json:"attributes,omitempty"`
}

// HeaderValues are the values of one header: `x-a: b` is one value, `x-a: [b, c]` a header sent
// twice.
type HeaderValues []string

// UnmarshalYAML takes a scalar or a sequence of scalars.
func (h *HeaderValues) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*h = HeaderValues{n.Value}
		return nil
	case yaml.SequenceNode:
		var vals []string
		if err := n.Decode(&vals); err != nil {
			return err
		}
		*h = vals
		return nil
	}
	return fmt.Errorf("line %d: a header is a value or a list of values", n.Line)
}

// JWTSpec is a verified token given by its claims: tests say what a token asserts, not how it
// is signed (JWT verification has tests of its own).
type JWTSpec struct {
	// Providers that verified it: "name" (in the destination's namespace) or "namespace/name".
	Providers []string       `yaml:"providers" json:"providers"`
	Claims    map[string]any `yaml:"claims" json:"claims"`
}

// Attributes turns the spec into request attributes.
func (r *RequestSpec) Attributes(now time.Time) (*policy.Attributes, error) {
	a := &policy.Attributes{}
	if err := a.Source.SetPrincipal(r.Source.Principal); err != nil {
		return nil, fmt.Errorf("source.principal: %w", err)
	}
	if r.Source.Address != "" {
		addr, err := netip.ParseAddr(r.Source.Address)
		if err != nil {
			return nil, fmt.Errorf("source.address: %w", err)
		}
		a.Source.Address = addr
	}
	a.Destination.Service = r.Destination.Service
	a.Destination.Namespace = r.Destination.Namespace
	if a.Destination.Namespace == "" {
		a.Destination.Namespace = model.DefaultNamespace
	}
	a.Destination.Principal, a.Destination.Port = r.Destination.Principal, r.Destination.Port
	a.Request.Method = r.Method
	if a.Request.Method == "" {
		a.Request.Method = "GET"
	}
	if err := policy.CheckMethod(a.Request.Method); err != nil {
		return nil, fmt.Errorf("method: %w (the service answers such a request 400)", err)
	}
	target := r.Path
	if target == "" {
		target = "/"
	}
	var err error
	if a.Request.Path, a.Request.Query, err = policy.NormalizePath(target); err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	a.Request.Host = policy.HostWithoutPort(r.Host)
	a.Request.Scheme, a.Request.Protocol, a.Request.SNI = r.Scheme, r.Protocol, r.SNI
	a.Request.Headers = make(map[string][]string, len(r.Headers))
	for k, v := range r.Headers {
		k = strings.ToLower(k)
		a.Request.Headers[k] = append(a.Request.Headers[k], v...)
	}
	a.Request.Time = now
	if r.Time != "" {
		if a.Request.Time, err = time.Parse(time.RFC3339, r.Time); err != nil {
			return nil, fmt.Errorf("time: %w", err)
		}
	}
	if j := r.JWT; j != nil {
		providers := make([]string, len(j.Providers))
		for i, p := range j.Providers {
			if !strings.Contains(p, "/") {
				p = a.Destination.Namespace + "/" + p
			}
			providers[i] = p
		}
		if a.JWT, err = jwt.NewToken(providers, j.Claims); err != nil {
			return nil, fmt.Errorf("jwt: %w", err)
		}
	}
	if k := r.APIKey; k != nil {
		if k.Provider == "" || k.Identity == "" {
			return nil, errors.New("apiKey: provider and identity are required")
		}
		p := k.Provider
		if !strings.Contains(p, "/") {
			p = a.Destination.Namespace + "/" + p
		}
		a.APIKey = &apikey.Key{ID: cmp.Or(k.ID, "test-key"), Provider: p, Identity: k.Identity, Attributes: k.Attributes}
	}
	return a, nil
}

// ParseRequest reads a RequestSpec from YAML (or JSON), rejecting unknown fields.
func ParseRequest(data []byte) (*RequestSpec, error) {
	var r RequestSpec
	if err := decodeStrict(data, &r); err != nil {
		return nil, fmt.Errorf("policytest: request: %w", err)
	}
	return &r, nil
}

func decodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty document")
		}
		return err
	}
	return nil
}
