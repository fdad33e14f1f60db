package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/identity/securefile"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// DefaultAPIKeyTTL and DefaultAPIKeyOverlap are the defaults of portcullis apikey create and
// rotate.
const (
	DefaultAPIKeyTTL     = 2160 * time.Hour // 90 days
	DefaultAPIKeyOverlap = 24 * time.Hour
)

// APIKeyFile names the APIKeyProvider document a command edits: its file, name and namespace.
type APIKeyFile struct {
	File, Provider, Namespace string
}

// APIKeyRequest is what `portcullis apikey create` and `rotate` need besides the file.
type APIKeyRequest struct {
	APIKeyFile
	// ID of the new key; derived from the identity and random characters unless set.
	ID string
	// Identity and Attributes ("name=value", repeatable) of a new key; rotate copies the old
	// key's.
	Identity   string
	Attributes []string
	TTL        time.Duration
	// OldID and Overlap are rotate's: the key replaced and how long it stays valid.
	OldID   string
	Overlap time.Duration
	Now     time.Time
}

// CreateAPIKey adds a new key to the provider (creating the provider document when the file has
// none) and returns the key's text, which exists nowhere else: the file holds its hash.
func CreateAPIKey(r APIKeyRequest) (key, id string, err error) {
	if r.Identity == "" {
		return "", "", errors.New("--identity is required")
	}
	if r.TTL <= 0 {
		return "", "", fmt.Errorf("--ttl must be positive, not %s", r.TTL)
	}
	attrs, err := parseAttributes(r.Attributes)
	if err != nil {
		return "", "", err
	}
	err = editAPIKeys(r.APIKeyFile, true, func(keys *yaml.Node) error {
		key, id, err = addKey(keys, r, r.Identity, attrs)
		return err
	})
	return key, id, err
}

// RotateAPIKey adds a new key for the identity of key r.OldID, with its attributes, and makes the
// old key expire after r.Overlap (or at its own expiry, if sooner), so clients can switch over.
func RotateAPIKey(r APIKeyRequest) (key, id string, err error) {
	if r.TTL <= 0 || r.Overlap < 0 {
		return "", "", fmt.Errorf("--ttl must be positive and --overlap not negative (0 ends the old key now), not %s and %s", r.TTL, r.Overlap)
	}
	err = editAPIKeys(r.APIKeyFile, false, func(keys *yaml.Node) error {
		old := findKey(keys, r.OldID)
		if old == nil {
			return fmt.Errorf("no key %q in APIKeyProvider %s/%s", r.OldID, r.Namespace, r.Provider)
		}
		var k model.APIKey
		if err := fromNode(old, &k); err != nil {
			return fmt.Errorf("key %q: %w", r.OldID, err)
		}
		if k.Revoked {
			return fmt.Errorf("key %q is revoked: create a new key instead", r.OldID)
		}
		if key, id, err = addKey(keys, r, k.Identity, k.Attributes); err != nil {
			return err
		}
		end := r.Now.Add(r.Overlap).UTC().Truncate(time.Second)
		if _, exp := k.Validity(); exp.IsZero() || end.Before(exp) {
			setField(old, "expires", end.Format(time.RFC3339))
		}
		return nil
	})
	return key, id, err
}

// RevokeAPIKey marks a key revoked: the authorization service refuses it (401, code "revoked")
// as soon as the control plane has loaded the file.
func RevokeAPIKey(f APIKeyFile, id string) error {
	return editAPIKeys(f, false, func(keys *yaml.Node) error {
		k := findKey(keys, id)
		if k == nil {
			return fmt.Errorf("no key %q in APIKeyProvider %s/%s", id, f.Namespace, f.Provider)
		}
		setField(k, "revoked", "true")
		return nil
	})
}

func parseAttributes(list []string) (map[string][]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	attrs := map[string][]string{}
	for _, a := range list {
		name, value, ok := strings.Cut(a, "=")
		if !ok || name == "" || value == "" {
			return nil, fmt.Errorf("--attr %q: want name=value", a)
		}
		attrs[name] = append(attrs[name], value)
	}
	return attrs, nil
}

// addKey appends a new key to the provider's keys and returns its text.
func addKey(keys *yaml.Node, r APIKeyRequest, identity string, attrs map[string][]string) (key, id string, err error) {
	id = r.ID
	if id == "" {
		if id, err = newKeyID(identity); err != nil {
			return "", "", err
		}
	}
	if findKey(keys, id) != nil {
		return "", "", fmt.Errorf("the provider already has a key %q", id)
	}
	key, hash, err := apikey.Generate(id)
	if err != nil {
		return "", "", err
	}
	k := model.APIKey{ID: id, Hash: hash, Identity: identity, Attributes: attrs, Expires: r.Now.Add(r.TTL).UTC().Truncate(time.Second).Format(time.RFC3339)}
	n, err := toNode(k)
	if err != nil {
		return "", "", fmt.Errorf("encoding key %q: %w", id, err)
	}
	n.Style = yaml.FlowStyle // one line per key
	keys.Content = append(keys.Content, n)
	return key, id, nil
}

// newKeyID derives a key id from the identity: its DNS-label characters and 8 random hex digits.
func newKeyID(identity string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(identity) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
		if b.Len() >= 48 {
			break
		}
	}
	prefix := strings.Trim(b.String(), "-")
	rnd := make([]byte, 4)
	if _, err := rand.Read(rnd); err != nil {
		return "", err
	}
	if prefix == "" {
		return "key-" + hex.EncodeToString(rnd), nil
	}
	return prefix + "-" + hex.EncodeToString(rnd), nil
}

// editAPIKeys reads the file, finds the provider's spec.keys (adding the provider when create
// allows it), lets edit change them, checks the result as the control plane would, and replaces
// the file atomically: a directory watcher sees the old file or the new one, never half of one.
func editAPIKeys(f APIKeyFile, create bool, edit func(keys *yaml.Node) error) error {
	if f.File == "" || f.Provider == "" {
		return errors.New("--file and --provider are required")
	}
	if f.Namespace == "" {
		f.Namespace = model.DefaultNamespace
	}
	data, err := os.ReadFile(f.File)
	if err != nil && !(create && errors.Is(err, fs.ErrNotExist)) {
		return err
	}
	docs, err := readDocuments(data)
	if err != nil {
		return fmt.Errorf("%s: %w", f.File, err)
	}
	doc := findProvider(docs, f)
	if doc == nil {
		if !create {
			return fmt.Errorf("%s has no APIKeyProvider %s/%s", f.File, f.Namespace, f.Provider)
		}
		doc = newProviderDocument(f)
		docs = append(docs, doc)
	}
	if err := edit(keysOf(doc)); err != nil {
		return err
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return fmt.Errorf("encoding %s: %w", f.File, err)
		}
	}
	if err := enc.Close(); err != nil {
		return err
	}
	// Never write a file the control plane would refuse (it would keep the last good mesh,
	// silently without the change).
	decoded, ps := source.Decode(f.File, out.Bytes())
	if len(ps) == 0 {
		ps = model.CheckDocuments(decoded)
	}
	if len(ps) > 0 {
		return fmt.Errorf("the edited file would not load, left unchanged: %w", ps)
	}
	return securefile.WriteAtomic(f.File, out.Bytes())
}

func readDocuments(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(n.Content) > 0 {
			docs = append(docs, &n)
		}
	}
}

// findProvider returns the document of the provider, or nil.
func findProvider(docs []*yaml.Node, f APIKeyFile) *yaml.Node {
	for _, d := range docs {
		root := d.Content[0]
		if field(root, "kind") == nil || field(root, "kind").Value != model.KindAPIKeyProvider {
			continue
		}
		meta := field(root, "metadata")
		name, ns := field(meta, "name"), field(meta, "namespace")
		nsValue := model.DefaultNamespace
		if ns != nil {
			nsValue = ns.Value
		}
		if name != nil && name.Value == f.Provider && nsValue == f.Namespace {
			return d
		}
	}
	return nil
}

func newProviderDocument(f APIKeyFile) *yaml.Node {
	doc := model.APIKeyProviderDoc{
		TypeMeta: model.TypeMeta{APIVersion: model.APIVersion, Kind: model.KindAPIKeyProvider},
		Metadata: model.ObjectMeta{Name: f.Provider, Namespace: f.Namespace},
	}
	n, _ := toNode(doc) // strings only: cannot fail
	return &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{n}}
}

// toNode renders a document type as a YAML node through its JSON form, the field names the
// documents use (the types carry JSON tags only), in block style.
func toNode(v any) (*yaml.Node, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	var plain func(n *yaml.Node)
	plain = func(n *yaml.Node) {
		n.Style = 0
		for _, c := range n.Content {
			plain(c)
		}
	}
	plain(&doc)
	return doc.Content[0], nil
}

// fromNode decodes a YAML node into a document type through JSON, as the control plane does.
func fromNode(n *yaml.Node, v any) error {
	var x any
	if err := n.Decode(&x); err != nil {
		return err
	}
	b, err := json.Marshal(x)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// keysOf returns the provider's spec.keys sequence, adding spec and keys when missing.
func keysOf(doc *yaml.Node) *yaml.Node {
	root := doc.Content[0]
	spec := field(root, "spec")
	if spec == nil || spec.Kind != yaml.MappingNode {
		spec = &yaml.Node{Kind: yaml.MappingNode}
		setNode(root, "spec", spec)
	}
	spec.Style = 0 // a flow "spec: {}" becomes a block to hold keys
	keys := field(spec, "keys")
	if keys == nil || keys.Kind != yaml.SequenceNode {
		keys = &yaml.Node{Kind: yaml.SequenceNode}
		setNode(spec, "keys", keys)
	}
	keys.Style = 0
	return keys
}

// findKey returns the key with the id, or nil.
func findKey(keys *yaml.Node, id string) *yaml.Node {
	for _, k := range keys.Content {
		if v := field(k, "id"); v != nil && v.Value == id {
			return k
		}
	}
	return nil
}

// field returns the value of a mapping's key, or nil.
func field(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func setNode(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}

// setField sets a scalar field of a mapping; "true" is written as a boolean, anything else as a
// string.
func setField(m *yaml.Node, key, value string) {
	tag := "!!str"
	if value == "true" {
		tag = "!!bool"
	}
	setNode(m, key, &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value})
}
