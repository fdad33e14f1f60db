package source

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/portcullis/portcullis/xds/model"
)

// FuzzDecode feeds arbitrary bytes to the decoder and the validator: they must return problems,
// never panic, and never publish a mesh with problems.
func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("../../examples/demo/mesh/*.yaml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(validMesh + "---\n" + validServices))
	f.Add([]byte(validMesh + "---\n" + revocationHeader + `    - {issuer: https://idp.test, jti: t1, expires: "2026-12-05T14:00:00Z"}
    - {issuer: https://idp.test, subject: alice, issuedBefore: "2026-12-05T10:00:00Z", expires: "2026-12-05T09:00:00Z"}
`))
	f.Add([]byte("a: &x [*x, *x]\n"))
	f.Add([]byte("---\n- 1\n--- !!binary 00\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, problems := Decode("fuzz.yaml", data)
		for _, p := range problems {
			if p.Message == "" {
				t.Fatalf("problem without a message: %+v", p)
			}
		}
		mesh, more := model.Build(docs)
		if (mesh == nil) == (more == nil) {
			t.Fatalf("Build returned mesh=%v and problems=%v", mesh != nil, more)
		}
		if mesh != nil && mesh.Version == "" {
			t.Fatal("mesh without a version")
		}
	})
}
