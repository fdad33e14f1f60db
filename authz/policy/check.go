package policy

import (
	"strings"

	"github.com/portcullis/portcullis/xds/model"
)

// finding is a problem in one policy document, before it is placed in a file.
type finding struct {
	field model.Path
	// regoLine is the line inside the Rego module, 0 when not a Rego problem.
	regoLine int
	message  string
}

// meshProblems places findings of a policy of a built mesh in its file.
func meshProblems(m *model.Mesh, doc *model.AuthorizationPolicyDoc, fs []finding) model.Problems {
	return placeFindings(m.Origin(doc), m.FieldLines(doc), doc, fs)
}

// placeFindings turns findings into problems with file, document, field and line. A Rego line
// is placed relative to the line of spec.rego.module: a multi-line module is a YAML block scalar
// ("module: |"), whose text starts on the next line.
func placeFindings(o model.Origin, lines map[model.Path]int, doc *model.AuthorizationPolicyDoc, fs []finding) model.Problems {
	out := make(model.Problems, 0, len(fs))
	for _, f := range fs {
		p := model.ProblemAt(o, lines, doc, f.field, f.message)
		if f.regoLine > 0 && model.LineOf(lines, f.field) > 0 && doc.Spec.Rego != nil && strings.Contains(doc.Spec.Rego.Module, "\n") {
			p.Line += f.regoLine
		}
		out = append(out, p)
	}
	return out
}

// Check compiles the policies of a mesh and returns the problems. It is a source.Checker, so an
// uncompilable policy (a Rego error) never replaces the last good mesh; the Rego modules it
// compiles are kept for the Compile of the same mesh.
func (c *Compiler) Check(m *model.Mesh) model.Problems {
	var problems model.Problems
	for _, doc := range m.AuthorizationPolicies {
		if _, findings := c.compilePolicy(doc, m); len(findings) > 0 {
			problems = append(problems, meshProblems(m, doc, findings)...)
		}
	}
	problems.Sort()
	return problems
}

// Check compiles the policies of a mesh with a compiler of its own and returns the problems.
func Check(m *model.Mesh) model.Problems { return NewCompiler(Options{}).Check(m) }

// CheckDocuments compiles the AuthorizationPolicy documents among docs, outside a built mesh (the
// files `portcullis policy lint` is given), with a compiler of its own. Documents that fail their
// own validation are skipped: validation reports them.
func CheckDocuments(docs []model.Document) model.Problems {
	c := NewCompiler(Options{})
	var problems model.Problems
	for i := range docs {
		d := &docs[i]
		doc, ok := d.Object.(*model.AuthorizationPolicyDoc)
		if !ok || len(doc.Validate()) > 0 {
			continue
		}
		if _, findings := c.compilePolicy(doc, nil); len(findings) > 0 {
			problems = append(problems, placeFindings(d.Origin, d.FieldLines, doc, findings)...)
		}
	}
	problems.Sort()
	return problems
}
