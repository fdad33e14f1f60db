package apikey_test

import (
	"strings"
	"testing"

	"github.com/portcullis/portcullis/authz/apikey"
)

// FuzzParse: the parser never panics, accepts only what it would generate, and its error never
// carries the input.
func FuzzParse(f *testing.F) {
	k, _, _ := apikey.Generate("batch-1")
	for _, s := range []string{k, "", "pck_", "pck__" + strings.Repeat("A", 43), "pck_a_" + strings.Repeat("_", 43), k + "=", "pck_a-_" + k[len(k)-43:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := apikey.Parse(s)
		if err != nil {
			if len(s) > 8 && strings.Contains(err.Error(), s) {
				t.Fatalf("the error quotes the input: %v", err)
			}
			return
		}
		if apikey.Prefix+id+"_"+secret != s || len(secret) != 43 || id == "" || strings.Contains(id, "_") {
			t.Fatalf("%q parsed as %q %q", s, id, secret)
		}
	})
}
