package source

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/portcullis/portcullis/xds/model"
)

// DefaultDebounce is how long Dir waits after the last file event before reloading, so an editor's
// save (often several events) causes one reload.
const DefaultDebounce = 100 * time.Millisecond

// Checker validates what model.Build cannot on its own, e.g. compiling Rego modules. It runs
// before a mesh is published; any problem keeps the previous mesh live.
type Checker func(*model.Mesh) model.Problems

// Status is what the last load attempt found, for the admin API.
type Status struct {
	Dir string `json:"dir"`
	// Version of the live mesh ("" before the first valid load).
	Version  string    `json:"version"`
	LoadedAt time.Time `json:"loadedAt,omitzero"`
	// LastAttempt is when documents were last read, valid or not.
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	Files       int       `json:"files"`
	Documents   int       `json:"documents"`
	// Problems of the last attempt; empty when the live mesh is what is on disk.
	Problems model.Problems `json:"problems"`
}

// DirOptions configure a Dir.
type DirOptions struct {
	Logger   *slog.Logger
	Meter    metric.Meter
	Debounce time.Duration
	Checks   []Checker
	// TracerProvider records a span per load, with each problem as an event (nil: none).
	TracerProvider trace.TracerProvider
}

// Dir loads mesh documents from a directory tree and reloads them when files change.
type Dir struct {
	Publisher
	dir    string
	opts   DirOptions
	log    *slog.Logger
	loads  metric.Int64Counter
	mu     sync.Mutex
	status Status

	tracer  trace.Tracer
	loading sync.Mutex             // one load at a time
	parsed  map[string]cachedParse // by file path: its last parse, reused while unchanged
}

var _ Source = (*Dir)(nil)

type cachedParse struct {
	sum [sha256.Size]byte
	pf  *parsedFile
}

// NewDir returns a source for the documents under dir. Call Load for the first load, then Run.
func NewDir(dir string, opts DirOptions) (*Dir, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = noop.NewTracerProvider()
	}
	d := &Dir{dir: dir, opts: opts, log: opts.Logger, status: Status{Dir: dir}, parsed: map[string]cachedParse{},
		tracer: opts.TracerProvider.Tracer("github.com/portcullis/portcullis/xds/source")}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if opts.Meter != nil {
		var err error
		d.loads, err = opts.Meter.Int64Counter("portcullis_config_loads",
			metric.WithDescription("Mesh document loads by result (ok, invalid, unchanged)."))
		if err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		_, err = opts.Meter.Int64ObservableGauge("portcullis_config_problems",
			metric.WithDescription("Validation problems of the last load; non-zero means the live mesh is older than the files."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(int64(len(d.Status().Problems)))
				return nil
			}))
		if err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
	}
	return d, nil
}

// Status returns what the last load found.
func (d *Dir) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.status
	s.Problems = slices.Clone(s.Problems)
	return s
}

// Load reads and validates every document now. It publishes the mesh when valid; otherwise it
// keeps the previous one, records the problems and returns them.
func (d *Dir) Load() error {
	d.loading.Lock()
	defer d.loading.Unlock()
	_, span := d.tracer.Start(context.Background(), "config.load", trace.WithAttributes(attribute.String("config.dir", d.dir)))
	defer span.End()
	err := d.load()
	if problems, ok := err.(model.Problems); ok {
		for _, p := range problems {
			span.AddEvent("problem", trace.WithAttributes(
				attribute.String("file", p.File), attribute.Int("document", p.Document), attribute.String("kind", p.Kind),
				attribute.String("name", p.Name), attribute.String("field", p.Field), attribute.String("message", p.Message)))
		}
		span.SetStatus(codes.Error, fmt.Sprintf("%d problems; the last good mesh stays live", len(problems)))
	} else if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "load failed")
	}
	d.mu.Lock()
	span.SetAttributes(attribute.String("mesh.version", d.status.Version), attribute.Int("config.files", d.status.Files), attribute.Int("config.documents", d.status.Documents))
	d.mu.Unlock()
	return err
}

func (d *Dir) load() error {
	files, err := d.files()
	if err != nil {
		d.record(nil, model.Problems{{File: d.dir, Message: err.Error()}}, 0, 0)
		return fmt.Errorf("source: %w", err)
	}
	var docs []model.Document
	var problems model.Problems
	seen := map[string]bool{}
	for _, f := range files {
		data, err := readFile(f)
		if err != nil {
			problems = append(problems, model.Problem{File: f, Message: err.Error()})
			continue
		}
		seen[f] = true
		sum := sha256.Sum256(data)
		c, ok := d.parsed[f]
		if !ok || c.sum != sum {
			c = cachedParse{sum: sum, pf: parse(f, data)}
			d.parsed[f] = c
		}
		ds, ps := c.pf.materialize()
		docs = append(docs, ds...)
		problems = append(problems, ps...)
	}
	for f := range d.parsed {
		if !seen[f] {
			delete(d.parsed, f)
		}
	}
	var mesh *model.Mesh
	if len(problems) == 0 {
		mesh, problems = Build(docs, d.opts.Checks...)
	} else {
		// Also report what is wrong inside the documents that did decode, so one pass shows
		// everything that can be known.
		problems = append(problems, model.CheckDocuments(docs)...)
	}
	// Sorted before record publishes the slice to Status readers, never after.
	problems.Sort()
	d.record(mesh, problems, len(files), len(docs))
	if len(problems) > 0 {
		return problems
	}
	return nil
}

// Build is model.Build followed by the checks; the mesh is returned only when all pass.
func Build(docs []model.Document, checks ...Checker) (*model.Mesh, model.Problems) {
	mesh, problems := model.Build(docs)
	if problems != nil {
		return nil, problems
	}
	for _, check := range checks {
		problems = append(problems, check(mesh)...)
	}
	if len(problems) > 0 {
		problems.Sort()
		return nil, problems
	}
	return mesh, nil
}

func (d *Dir) record(mesh *model.Mesh, problems model.Problems, files, docs int) {
	now := time.Now()
	result := "ok"
	d.mu.Lock()
	fixed := len(d.status.Problems)
	d.status.LastAttempt, d.status.Files, d.status.Documents = now, files, docs
	d.status.Problems = problems
	if mesh != nil {
		if d.Publish(mesh) {
			d.status.Version, d.status.LoadedAt = mesh.Version, now
		} else {
			result = "unchanged"
		}
	} else {
		result = "invalid"
	}
	live := d.status.Version
	d.mu.Unlock()
	if d.loads != nil {
		d.loads.Add(context.Background(), 1, metric.WithAttributes(attribute.String("result", result)))
	}
	if fixed > 0 && mesh != nil {
		// Said once, so whoever fixed a broken document sees it took.
		d.log.Info("mesh documents valid again; the problems of the last load are fixed", "dir", d.dir, "version", mesh.Version, "fixed_problems", fixed)
	}
	switch result {
	case "ok":
		d.log.Info("mesh documents loaded", "dir", d.dir, "version", mesh.Version, "files", files, "documents", docs)
		Warn(d.log, mesh)
	case "invalid":
		msgs := make([]string, len(problems))
		for i, p := range problems {
			msgs[i] = p.String()
		}
		d.log.Error("mesh documents invalid; keeping the last good mesh", "dir", d.dir, "live_version", live, "problems", len(problems), "errors", msgs)
	}
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("file is larger than the %d bytes allowed", MaxFileBytes)
	}
	return data, nil
}

// files lists the *.yaml and *.yml files under the directory, skipping hidden entries (editor swap
// files, Kubernetes ConfigMap "..data" internals) and sorting for a stable order.
func (d *Dir) files() ([]string, error) {
	var files []string
	err := filepath.WalkDir(d.dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != d.dir && strings.HasPrefix(e.Name(), ".") {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if e.IsDir() {
			return nil
		}
		if ext := filepath.Ext(path); ext == ".yaml" || ext == ".yml" {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.dir, err)
	}
	slices.Sort(files)
	return files, nil
}

// Run watches the directory tree and reloads after changes settle, until ctx ends.
func (d *Dir) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("source: watching %s: %w", d.dir, err)
	}
	defer w.Close()
	if err := d.watchTree(w); err != nil {
		return err
	}
	// Reload once the watches are in place: a change made between the caller's first Load and
	// now produced no event.
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("source: file watcher closed")
			}
			d.log.Debug("mesh file event", "file", ev.Name, "op", ev.Op.String())
			timer.Reset(d.opts.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("source: file watcher closed")
			}
			// An overflow loses events: reload to be sure.
			d.log.Warn("file watcher error; reloading", "dir", d.dir, "err", err)
			timer.Reset(d.opts.Debounce)
		case <-timer.C:
			if err := d.watchTree(w); err != nil {
				d.log.Warn("re-watching mesh directory", "err", err)
			}
			_ = d.Load() // problems are recorded and logged by Load
		}
	}
}

// watchTree adds every non-hidden directory under the root; fsnotify is not recursive, and new
// subdirectories appear between reloads.
func (d *Dir) watchTree(w *fsnotify.Watcher) error {
	watched := w.WatchList()
	return filepath.WalkDir(d.dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("source: watching %s: %w", path, err)
		}
		if !e.IsDir() {
			return nil
		}
		if path != d.dir && strings.HasPrefix(e.Name(), ".") {
			return filepath.SkipDir
		}
		if slices.Contains(watched, path) {
			return nil
		}
		if err := w.Add(path); err != nil {
			return fmt.Errorf("source: watching %s: %w", path, err)
		}
		return nil
	})
}

// Warn logs, for a source that loaded mesh, what is valid but likely not what its authors
// meant: AuthorizationPolicies that authorization OFF leaves unenforced, and documents whose
// reach the namespace rules changed (Mesh.ReachWarnings), one line each.
func Warn(log *slog.Logger, mesh *model.Mesh) {
	if n := mesh.UnenforcedPolicies(); n > 0 {
		log.Warn("Mesh spec.authz.mode is OFF: proxies do not call the authorization service, so no AuthorizationPolicy is enforced", "policies", n)
	}
	for _, p := range mesh.ReachWarnings() {
		log.Warn("document reaches only its own namespace now", "warning", p.String())
	}
}
