package pattern

import "testing"

// TestCoversIsSound: whenever Covers says a list matches everything a pattern does, every sample
// the pattern matches is matched by the list. The linter reports a rule that can never match on
// Covers' word, so a wrong true would be a false alarm; the lint tests check the trues it must
// find.
func TestCoversIsSound(t *testing.T) {
	paths := []string{"/", "/api", "/api/", "/api/x", "/api/v1", "/api/v1/x", "/api/v1/x/y", "/apix", "/a/b/c", "/a/x/b", "/files/r.pdf", "/other"}
	pathPatterns := []string{"/api", "/api/x", "/api/*", "/api/v1/*", "/a/*/b", "/a/**", "/files/*.pdf", "/**", "/*", "/other"}
	for _, p := range pathPatterns {
		for _, q := range pathPatterns {
			for _, r := range pathPatterns {
				list := ParsePaths([]string{q, r})
				if !list.Covers(p) {
					continue
				}
				pp := ParsePath(p)
				for _, s := range paths {
					if pp.Match(s) && !list.Match(s) {
						t.Errorf("%v covers %q, but %q matches only the pattern", list.Raw(), p, s)
					}
				}
			}
		}
	}
	principals := []string{"", "spiffe://td/ns/a/sa/x", "spiffe://td/ns/a/sa/y", "spiffe://td/ns/b/sa/x", "spiffe://other/ns/a/sa/x", "spiffe://td/custom"}
	principalPatterns := []string{"*", "spiffe://td/*", "spiffe://td/ns/a/*", "spiffe://td/ns/a/sa/x", "*/sa/x", "*/x", "*/custom"}
	for _, p := range principalPatterns {
		for _, q := range principalPatterns {
			list := ParsePrincipals([]string{q})
			if !list.Covers(p) {
				continue
			}
			pp := ParsePrincipal(p)
			for _, s := range principals {
				if pp.Match(s) && !list.Match(s) {
					t.Errorf("%v covers %q, but %q matches only the pattern", list.Raw(), p, s)
				}
			}
		}
	}
}
