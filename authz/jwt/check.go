package jwt

import (
	"github.com/portcullis/portcullis/xds/model"
)

// Check reports what model validation cannot see in JWTProvider documents: inline key sets that
// do not parse or hold no usable key, and CA files that cannot be read. Keys from files and URLs
// are not required at load time (an issuer may come up later); their health shows on
// /debug/authz. It has the signature of source.Checker.
func Check(m *model.Mesh) model.Problems {
	var ps model.Problems
	for _, doc := range m.JWTProviders {
		report := func(field model.Path, msg string) { ps = append(ps, m.Problem(doc, field, msg)) }
		s := &doc.Spec
		algs := s.Algorithms
		if len(algs) == 0 {
			algs = []string{"RS256", "ES256"}
		}
		if s.JWKS.Inline != "" {
			if _, err := parseJWKS([]byte(s.JWKS.Inline), algs); err != nil {
				report("spec.jwks.inline", err.Error())
			}
		}
		if s.JWKS.CAFile != "" {
			if _, err := loadCAFile(s.JWKS.CAFile); err != nil {
				report("spec.jwks.caFile", err.Error())
			}
		}
	}
	return ps
}
