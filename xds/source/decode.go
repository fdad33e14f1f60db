package source

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/portcullis/portcullis/xds/model"
)

// Limits that keep a hostile or broken file from exhausting the control plane.
const (
	MaxFileBytes    = 4 << 20
	maxDocuments    = 10000
	maxNestingDepth = 32
)

// Decode parses every YAML document in data (the contents of file) into model documents. It
// returns the documents that decoded cleanly and a problem for each one that did not; empty
// documents are skipped but still counted, so "document 3" is the third in the file.
func Decode(file string, data []byte) ([]model.Document, model.Problems) {
	return parse(file, data).materialize()
}

// parsedFile is a file's documents after the YAML, shape and type checks, as JSON ready to
// become objects. Dir caches it by file content, so a reload re-parses only changed files while
// every load still gets fresh, unshared objects.
type parsedFile struct {
	file     string
	docs     []parsedDoc
	problems model.Problems
}

type parsedDoc struct {
	origin model.Origin
	kind   string
	raw    []byte
	lines  map[model.Path]int
}

// materialize decodes the parsed documents into new objects.
func (pf *parsedFile) materialize() ([]model.Document, model.Problems) {
	docs := make([]model.Document, 0, len(pf.docs))
	problems := slices.Clone(pf.problems)
	for _, d := range pf.docs {
		obj := model.NewObject(d.kind)
		jd := json.NewDecoder(bytes.NewReader(d.raw))
		jd.DisallowUnknownFields()
		if err := jd.Decode(obj); err != nil {
			// The converter checked shape and types, so this is a bug rather than bad input;
			// still a problem report, never a crash.
			problems = append(problems, model.Problem{File: pf.file, Document: d.origin.Document, Kind: d.kind, Line: d.origin.Line, Message: fmt.Sprintf("cannot decode: %v", err)})
			continue
		}
		resolvePaths(obj, filepath.Dir(pf.file))
		docs = append(docs, model.Document{Origin: d.origin, Object: obj, FieldLines: d.lines})
	}
	return docs, problems
}

func parse(file string, data []byte) *parsedFile {
	pf := &parsedFile{file: file}
	if len(data) > MaxFileBytes {
		pf.problems = model.Problems{{File: file, Message: fmt.Sprintf("file is %d bytes, more than the %d allowed", len(data), MaxFileBytes)}}
		return pf
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var problems model.Problems
	for index := 1; ; index++ {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The YAML stream is broken from here on: nothing after it can be trusted.
			problems = append(problems, model.Problem{File: file, Document: index, Message: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")})
			break
		}
		if index > maxDocuments {
			problems = append(problems, model.Problem{File: file, Message: fmt.Sprintf("more than %d documents", maxDocuments)})
			break
		}
		doc, ps := parseDocument(file, index, &root)
		problems = append(problems, ps...)
		if doc != nil {
			pf.docs = append(pf.docs, *doc)
		}
	}
	pf.problems = problems
	return pf
}

func parseDocument(file string, index int, root *yaml.Node) (*parsedDoc, model.Problems) {
	n := root
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil, nil
		}
		n = n.Content[0]
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil, nil // an empty document between "---" separators
	}
	origin := model.Origin{File: file, Document: index, Line: n.Line}
	fail := func(kind, name string, field model.Path, line int, msg string) (*parsedDoc, model.Problems) {
		return nil, model.Problems{{File: file, Document: index, Kind: kind, Name: name, Field: string(field), Line: line, Message: msg}}
	}
	if n.Kind != yaml.MappingNode {
		return fail("", "", "", n.Line, "a document must be a mapping with apiVersion, kind, metadata and spec")
	}
	apiVersion, kind, name := scalarField(n, "apiVersion"), scalarField(n, "kind"), ""
	if md := mappingField(n, "metadata"); md != nil {
		name = scalarField(md, "name")
		if ns := scalarField(md, "namespace"); ns != "" && kind != model.KindMesh {
			name = ns + "/" + name
		}
	}
	if kind != model.KindMesh && !strings.Contains(name, "/") && name != "" {
		name = model.DefaultNamespace + "/" + name
	}
	switch {
	case kind == "":
		return fail("", "", "kind", n.Line, "required (one of "+strings.Join(model.Kinds, ", ")+")")
	case apiVersion != model.APIVersion:
		return fail(kind, name, "apiVersion", n.Line, fmt.Sprintf("must be %q, not %q", model.APIVersion, apiVersion))
	}
	obj := model.NewObject(kind)
	if obj == nil {
		return fail("", "", "kind", n.Line, fmt.Sprintf("unknown kind %q (one of %s)", kind, strings.Join(model.Kinds, ", ")))
	}
	c := converter{lines: map[model.Path]int{}}
	value := c.convert(n, reflect.TypeOf(obj).Elem(), "", 0)
	if len(c.errs) > 0 {
		ps := make(model.Problems, 0, len(c.errs))
		for _, e := range c.errs {
			ps = append(ps, model.Problem{File: file, Document: index, Kind: kind, Name: name, Field: string(e.Field), Line: c.lines[e.Field], Message: e.Message})
		}
		// The document is refused either way; validating what did convert reports its other
		// problems now, rather than after the first ones are fixed.
		return nil, append(ps, c.validatePartial(origin, kind, value)...)
	}
	raw, err := json.Marshal(value)
	if err != nil {
		return fail(kind, name, "", n.Line, fmt.Sprintf("cannot decode: %v", err))
	}
	return &parsedDoc{origin: origin, kind: kind, raw: raw, lines: c.lines}, nil
}

// resolvePaths makes file paths inside a document relative to the document's own file, so a mesh
// directory can be moved and loaded from anywhere.
func resolvePaths(obj model.Object, base string) {
	if p, ok := obj.(*model.JWTProviderDoc); ok {
		for _, f := range []*string{&p.Spec.JWKS.File, &p.Spec.JWKS.CAFile} {
			if *f != "" && !filepath.IsAbs(*f) {
				*f = filepath.Join(base, *f)
			}
		}
	}
}

func scalarField(n *yaml.Node, key string) string {
	if v := lookup(n, key); v != nil && v.Kind == yaml.ScalarNode {
		return v.Value
	}
	return ""
}

func mappingField(n *yaml.Node, key string) *yaml.Node {
	if v := lookup(n, key); v != nil && v.Kind == yaml.MappingNode {
		return v
	}
	return nil
}

func lookup(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// converter checks a YAML node tree against a Go type, field by field, and converts it into the
// JSON-shaped value the type decodes from. Checking here, rather than trusting a generic decoder,
// gives every error a field path and a line, and rejects what a lenient decoder would drop.
type converter struct {
	errs  model.FieldErrors
	lines map[model.Path]int
	// covered are fields whose validation would only repeat a problem already reported: the
	// suggested name of an unknown field (absent, as it was misspelled).
	covered []model.Path
}

// validatePartial validates a document that failed conversion, from the fields that converted
// (the failed ones are left empty), and returns the problems conversion did not already cover:
// none at or under a failed field, nor at the field holding it (which the failure emptied).
func (c *converter) validatePartial(origin model.Origin, kind string, value any) model.Problems {
	raw, err := json.Marshal(value)
	if err != nil {
		return nil
	}
	obj := model.NewObject(kind)
	if err := json.Unmarshal(raw, obj); err != nil {
		return nil
	}
	covered, parents := slices.Clone(c.covered), map[model.Path]bool{}
	for _, e := range c.errs {
		covered = append(covered, e.Field)
		parents[parentPath(e.Field)] = true
	}
	var ps model.Problems
	for _, fe := range obj.Validate() {
		if !parents[fe.Field] && !slices.ContainsFunc(covered, func(p model.Path) bool { return within(fe.Field, p) }) {
			ps = append(ps, model.ProblemAt(origin, c.lines, obj, fe.Field, fe.Message))
		}
	}
	return ps
}

// within reports whether field p is q or inside it.
func within(p, q model.Path) bool {
	rest, ok := strings.CutPrefix(string(p), string(q))
	return ok && (rest == "" || strings.HasPrefix(rest, ".") || strings.HasPrefix(rest, "["))
}

// parentPath is the field holding p ("spec.rules[0]" for "spec.rules[0].to"; "" at the top).
func parentPath(p model.Path) model.Path {
	return p[:max(0, strings.LastIndexAny(string(p), ".["))]
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func (c *converter) convert(n *yaml.Node, t reflect.Type, p model.Path, depth int) any {
	c.lines[p] = n.Line
	if depth > maxNestingDepth {
		c.errs.Addf(p, "nested more than %d levels deep", maxNestingDepth)
		return nil
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		c.errs.Addf(p, "YAML anchors and aliases are not supported")
		return nil
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Struct:
			return nil
		}
		c.errs.Addf(p, "expected %s, got null", describe(t))
		return nil
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		if n.Kind != yaml.ScalarNode {
			c.errs.Addf(p, "expected %s, got %s", describe(t), describeNode(n))
			return nil
		}
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			c.errs.Addf(p, "%v", err)
			return nil // emptied, so validatePartial can still decode the rest of the document
		}
		return n.Value
	}
	switch t.Kind() {
	case reflect.Pointer:
		return c.convert(n, t.Elem(), p, depth)
	case reflect.Struct:
		return c.convertStruct(n, t, p, depth)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.errs.Addf(p, "expected a list, got %s", describeNode(n))
			return nil
		}
		out := make([]any, len(n.Content))
		for i, item := range n.Content {
			out[i] = c.convert(item, t.Elem(), p.Index(i), depth+1)
		}
		return out
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.errs.Addf(p, "expected a mapping, got %s", describeNode(n))
			return nil
		}
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				c.errs.Addf(p, "map keys must be strings (line %d)", k.Line)
				continue
			}
			if _, dup := out[k.Value]; dup {
				c.errs.Addf(p.Key(k.Value), "duplicate key %q", k.Value)
				continue
			}
			out[k.Value] = c.convert(n.Content[i+1], t.Elem(), p.Key(k.Value), depth+1)
		}
		return out
	}
	if n.Kind != yaml.ScalarNode {
		c.errs.Addf(p, "expected %s, got %s", describe(t), describeNode(n))
		return nil
	}
	return c.convertScalar(n, t, p)
}

func (c *converter) convertScalar(n *yaml.Node, t reflect.Type, p model.Path) any {
	switch t.Kind() {
	case reflect.String:
		// The literal text, so `equals: 42` means the string "42" and nothing is re-spelled.
		return n.Value
	case reflect.Bool:
		if n.ShortTag() != "!!bool" {
			c.errs.Addf(p, "expected true or false, got %q", n.Value)
			return nil
		}
		return n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		v, err := strconv.ParseUint(n.Value, 0, t.Bits())
		if err != nil || n.ShortTag() != "!!int" {
			c.errs.Addf(p, "expected a whole number from 0 to %d, got %q", uint64(1)<<t.Bits()-1, n.Value)
			return nil
		}
		return json.Number(strconv.FormatUint(v, 10))
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		v, err := strconv.ParseInt(n.Value, 0, t.Bits())
		if err != nil || n.ShortTag() != "!!int" {
			c.errs.Addf(p, "expected a whole number, got %q", n.Value)
			return nil
		}
		return json.Number(strconv.FormatInt(v, 10))
	case reflect.Float32, reflect.Float64:
		v, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), t.Bits())
		if tag := n.ShortTag(); err != nil || (tag != "!!int" && tag != "!!float") || math.IsNaN(v) || math.IsInf(v, 0) {
			c.errs.Addf(p, "expected a finite number, got %q", n.Value)
			return nil
		}
		return json.Number(strconv.FormatFloat(v, 'g', -1, t.Bits()))
	}
	c.errs.Addf(p, "unsupported field type %s", t)
	return nil
}

func (c *converter) convertStruct(n *yaml.Node, t reflect.Type, p model.Path, depth int) any {
	if n.Kind != yaml.MappingNode {
		c.errs.Addf(p, "expected a mapping, got %s", describeNode(n))
		return nil
	}
	fields := jsonFields(t)
	out := map[string]any{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			c.errs.Addf(p, "field names must be plain strings (merge keys are not supported) (line %d)", k.Line)
			continue
		}
		fp := p.Field(k.Value)
		ft, ok := fields[k.Value]
		if !ok {
			c.lines[fp] = k.Line
			hint, best := suggest(k.Value, fields)
			c.errs.Addf(fp, "unknown field%s", hint)
			if best != "" {
				c.covered = append(c.covered, p.Field(best))
			}
			continue
		}
		if _, dup := out[k.Value]; dup {
			c.lines[fp] = k.Line
			c.errs.Addf(fp, "field given twice")
			continue
		}
		out[k.Value] = c.convert(v, ft, fp, depth+1)
	}
	return out
}

// jsonFields maps JSON field names to types, flattening embedded (inline) structs the way
// encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				fields[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// suggest returns " (did you mean ...?)" and the field meant, when one is close enough.
func suggest(got string, fields map[string]reflect.Type) (string, string) {
	best, bestDist := "", 3
	for name := range fields {
		if d := editDistance(strings.ToLower(got), strings.ToLower(name)); d < bestDist || (d == bestDist && name < best) {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return "", ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best), best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func describe(t reflect.Type) string {
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice:
		return "a list"
	case reflect.Pointer:
		return describe(t.Elem())
	}
	return "a number"
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}
