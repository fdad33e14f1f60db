package model

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Path is a field path inside a document, written the way users read it:
// "spec.rules[0].to.paths[1]".
type Path string

// Field returns the path of a named child field.
func (p Path) Field(name string) Path {
	if p == "" {
		return Path(name)
	}
	return p + "." + Path(name)
}

// Index returns the path of a list element.
func (p Path) Index(i int) Path { return p + Path("["+strconv.Itoa(i)+"]") }

// Key returns the path of a map entry.
func (p Path) Key(k string) Path { return p + Path("["+strconv.Quote(k)+"]") }

// FieldError is one problem at one field of one document.
type FieldError struct {
	Field   Path
	Message string
}

// FieldErrors collects every problem of a document instead of stopping at the first.
type FieldErrors []FieldError

// Addf records a problem at field p.
func (e *FieldErrors) Addf(p Path, format string, args ...any) {
	*e = append(*e, FieldError{Field: p, Message: fmt.Sprintf(format, args...)})
}

// Problem is a validation error located in the user's files: which file, which document in it,
// which object, which field, and (when known) which line.
type Problem struct {
	File     string `json:"file"`
	Document int    `json:"document"` // 1-based position in the file
	Kind     string `json:"kind,omitempty"`
	Name     string `json:"name,omitempty"` // namespace/name, or name for cluster-scoped kinds
	Field    string `json:"field,omitempty"`
	Line     int    `json:"line,omitempty"`
	Message  string `json:"message"`
	// Warning marks a problem that does not make the documents invalid (Mesh.ReachWarnings).
	Warning bool `json:"warning,omitempty"`
}

// String formats the problem as
// `mesh/policies.yaml: document 3 (AuthorizationPolicy/allow-frontend): spec.rules[0].to.paths[1]: must start with "/" (line 12)`.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteString(": ")
	}
	if p.Document > 0 {
		fmt.Fprintf(&b, "document %d", p.Document)
		if p.Kind != "" {
			fmt.Fprintf(&b, " (%s/%s)", p.Kind, p.Name)
		}
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	if p.Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(p.Message)
	if p.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", p.Line)
	}
	return b.String()
}

// ProblemAt places msg at field of a document: its file, position in the file, kind and
// namespace/name, and the line of the field, of its nearest ancestor with a recorded line, or of
// the document. Every check reports through it (or Mesh.Problem), so every problem reads the
// same. o is nil for a document that did not decode.
func ProblemAt(origin Origin, lines map[Path]int, o Object, field Path, msg string) Problem {
	p := Problem{File: origin.File, Document: origin.Document, Line: origin.Line, Field: string(field), Message: msg}
	if o != nil {
		p.Kind = o.GetKind()
		p.Name = RefOf(o).String()
	}
	if l := LineOf(lines, field); l > 0 {
		p.Line = l
	}
	return p
}

// LineOf returns the line of a field, or of its nearest ancestor that has one; 0 when none has.
func LineOf(lines map[Path]int, p Path) int {
	for p != "" {
		if l, ok := lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(string(p), ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// Problems is every validation error of a set of documents. It is an error so that callers can
// return it whole; the last good mesh stays live whenever a non-empty Problems is returned.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return "model: invalid mesh documents:\n  " + strings.Join(lines, "\n  ")
}

// Sort orders problems by file, document, line and field so output is stable.
func (ps Problems) Sort() {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Document != b.Document {
			return a.Document < b.Document
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Field < b.Field
	})
}
