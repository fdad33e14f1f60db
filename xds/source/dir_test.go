package source

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/xds/model"
)

// waitMesh waits for the source to publish a mesh other than prev.
func waitMesh(t *testing.T, s Source, changed <-chan struct{}) *model.Mesh {
	t.Helper()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no new mesh published within 10s")
	}
	m, _ := s.Current()
	return m
}

func TestDirWatchKeepsLastGoodMesh(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		// Write then rename, as editors and ConfigMap updates do, so no half-written file is read.
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("mesh.yaml", validMesh)
	write("services.yaml", validServices)

	d, err := NewDir(dir, DirOptions{Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Load(); err != nil {
		t.Fatal(err)
	}
	first, changed := d.Current()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	// A valid edit is published.
	edited := strings.Replace(validServices, "port: 8080", "port: 8082", 1)
	write("services.yaml", edited)
	second := waitMesh(t, d, changed)
	if second.Version == first.Version {
		t.Fatal("edit did not change the mesh version")
	}
	if got := second.Service("shop", "backend").Spec.Ports[0].Port; got != 8082 {
		t.Fatalf("backend port = %d, want 8082", got)
	}

	// An invalid edit is reported and changes nothing.
	_, changed = d.Current()
	write("services.yaml", strings.Replace(edited, "port: 8082", "prot: 8083", 1))
	deadline := time.Now().Add(10 * time.Second)
	for len(d.Status().Problems) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("invalid edit not reported in Status within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := d.Status()
	if !strings.Contains(st.Problems[0].String(), "spec.ports[0].prot: unknown field") {
		t.Errorf("problem = %s", st.Problems[0])
	}
	if st.Version != second.Version {
		t.Errorf("status version %s, want the last good %s", st.Version, second.Version)
	}
	if m, _ := d.Current(); m != second {
		t.Error("invalid edit replaced the live mesh")
	}
	select {
	case <-changed:
		t.Fatal("invalid edit woke consumers")
	default:
	}

	// Fixing it publishes again and clears the problems; a new subdirectory is watched too.
	if err := os.Mkdir(filepath.Join(dir, "more"), 0o700); err != nil {
		t.Fatal(err)
	}
	write("services.yaml", validServices)
	third := waitMesh(t, d, changed)
	if len(d.Status().Problems) != 0 {
		t.Errorf("problems remain after fix: %v", d.Status().Problems)
	}
	_, changed = d.Current()
	time.Sleep(100 * time.Millisecond) // let the reload that follows the mkdir add the watch
	if err := os.WriteFile(filepath.Join(dir, "more", "svc.yaml"), []byte(header+"kind: Service\nmetadata: {name: cart, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fourth := waitMesh(t, d, changed)
	if fourth.Service("shop", "cart") == nil || fourth.Version == third.Version {
		t.Error("document in a new subdirectory not loaded")
	}
}

func TestHiddenAndOtherFilesIgnored(t *testing.T) {
	d, err := loadFiles(t, map[string]string{
		"mesh.yaml":     validMesh,
		".swp.yaml":     "not: [valid",
		"README.md":     "# notes",
		"services.json": "{}",
		"services.yml":  validServices,
		"empty.yaml":    "---\n---\n",
		"comments.yaml": "# only a comment\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := d.Status(); st.Files != 4 || st.Documents != 3 {
		t.Errorf("files=%d documents=%d, want 4 and 3", st.Files, st.Documents)
	}
}

// TestDirStatusWhileLoading reads the status while loads of an invalid set run: with -race it
// fails if Load touches the problems it published (it used to sort them after publishing).
func TestDirStatusWhileLoading(t *testing.T) {
	dir := t.TempDir()
	// The first document decodes but fails validation, the second does not decode: their
	// problems are found in reverse order, so sorting them moves elements.
	bad := "apiVersion: portcullis.dev/v1alpha1\nkind: Service\nmetadata: {name: zz, namespace: demo}\nspec: {ports: [{port: 0}]}\n" +
		"---\napiVersion: portcullis.dev/v1alpha1\nkind: Service\nmetadata: {name: yy, namespace: demo}\nspec: {bogus: 1}\n"
	for name, content := range map[string]string{"mesh.yaml": validMesh, "services.yaml": bad} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d, err := NewDir(dir, DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			_ = d.Load()
		}
	}()
	for {
		select {
		case <-done:
			if n := len(d.Status().Problems); n < 2 {
				t.Fatalf("%d problems recorded, want every one of the invalid set", n)
			}
			return
		default:
			for _, p := range d.Status().Problems {
				_ = p.String()
			}
		}
	}
}

// A load that fixes the previous one's problems says so once.
func TestFixedDocumentsLogged(t *testing.T) {
	dir := t.TempDir()
	write := func(content string) {
		if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var logs syncBuffer
	d, err := NewDir(dir, DirOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	write(validMesh + "---\n" + validServices)
	if err := d.Load(); err != nil {
		t.Fatal(err)
	}
	write(validMesh + "---\n" + strings.Replace(validServices, "port: 8080", "prot: 8080", 1))
	if err := d.Load(); err == nil {
		t.Fatal("broken document loaded")
	}
	if strings.Contains(logs.String(), "valid again") {
		t.Fatalf("'valid again' before the fix:\n%s", logs.String())
	}
	write(validMesh + "---\n" + validServices) // back to the live version: nothing to publish
	if err := d.Load(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "mesh documents valid again; the problems of the last load are fixed"); n != 1 {
		t.Fatalf("'valid again' logged %d times, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "fixed_problems=1") {
		t.Errorf("the fix does not say how many problems it fixed:\n%s", logs.String())
	}
	if err := d.Load(); err != nil || strings.Count(logs.String(), "valid again") != 1 {
		t.Errorf("a second valid load logged 'valid again' again (%v):\n%s", err, logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's and the test's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
