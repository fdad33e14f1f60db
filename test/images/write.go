package images

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options of Write.
type Options struct {
	// Dir receives <name>.tar for each image.
	Dir string
	// Tag of every image; "latest" (what deploy/ names) unless set.
	Tag string
	// Gzip compresses the layers, for distribution. Uncompressed layers (what the cluster
	// harness imports) cost no CPU to write; containerd takes either.
	Gzip bool
}

// Result is one written image tarball.
type Result struct {
	Name string
	// Ref is the image's name in the tarball (Repository+Name:Tag, or the Image's Ref).
	Ref string
	// Path of the tarball (docker-archive format, as `docker save` writes; `ctr images import`,
	// `docker load` and `podman load` read it).
	Path string
	// Digest is the image's manifest digest, Config its configuration's (the image ID).
	Digest, Config v1.Hash
	// Bytes is the tarball's size, Layers the sum of its layers' (uncompressed) content.
	Bytes, Layers int64
	// SHA256 is the tarball's own hash: equal inputs give an equal file.
	SHA256 string
}

// Write builds each image and writes it to opts.Dir as a tarball. Everything in the output is
// a function of the inputs: entries sorted, owner root, times Epoch, layers built once and
// shared by the images that list them.
func Write(imgs []Image, opts Options) ([]Result, error) {
	tag := opts.Tag
	if tag == "" {
		tag = "latest"
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	scratch, err := os.MkdirTemp(opts.Dir, ".layers-")
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	defer os.RemoveAll(scratch)
	b := &builder{dir: scratch, gzip: opts.Gzip, built: map[string]builtLayer{}}
	var out []Result
	for _, spec := range imgs {
		ref := spec.Ref
		if ref == "" {
			ref = Repository + spec.Name + ":" + tag
		}
		r, err := b.write(spec, ref, filepath.Join(opts.Dir, spec.Name+".tar"))
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

type builtLayer struct {
	def   Layer
	layer v1.Layer
	size  int64 // uncompressed
}

type builder struct {
	dir   string
	gzip  bool
	built map[string]builtLayer
}

// layer builds l once; a second layer of the same name must be the same definition.
func (b *builder) layer(l Layer) (builtLayer, error) {
	if got, ok := b.built[l.Name]; ok {
		if !reflect.DeepEqual(got.def, l) {
			return builtLayer{}, fmt.Errorf("images: two different layers named %s", l.Name)
		}
		return got, nil
	}
	fl, err := writeFileLayer(l, filepath.Join(b.dir, l.Name+".tar"))
	if err != nil {
		return builtLayer{}, err
	}
	bl := builtLayer{def: l, layer: fl, size: fl.size}
	if b.gzip {
		bl.layer, err = tarball.LayerFromFile(fl.path, tarball.WithCompressionLevel(gzip.DefaultCompression),
			tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
		if err != nil {
			return builtLayer{}, fmt.Errorf("images: layer %s: %w", l.Name, err)
		}
	}
	b.built[l.Name] = bl
	return bl, nil
}

func (b *builder) image(spec Image) (v1.Image, int64, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var size int64
	for _, l := range spec.Layers {
		bl, err := b.layer(l)
		if err != nil {
			return nil, 0, err
		}
		size += bl.size
		img, err = mutate.Append(img, mutate.Addendum{Layer: bl.layer, History: v1.History{
			Created: v1.Time{Time: Epoch}, CreatedBy: "test/images: layer " + l.Name,
		}})
		if err != nil {
			return nil, 0, fmt.Errorf("images: %s: %w", spec.Name, err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, 0, fmt.Errorf("images: %s: %w", spec.Name, err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = "linux", "amd64", v1.Time{Time: Epoch}
	cfg.Config.Entrypoint, cfg.Config.User, cfg.Config.Env = spec.Entrypoint, spec.User, spec.Env
	cfg.Config.WorkingDir = "/"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, 0, fmt.Errorf("images: %s: %w", spec.Name, err)
	}
	return img, size, nil
}

func (b *builder) write(spec Image, ref, path string) (Result, error) {
	img, size, err := b.image(spec)
	if err != nil {
		return Result{}, err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return Result{}, fmt.Errorf("images: %s: %w", spec.Name, err)
	}
	r := Result{Name: spec.Name, Ref: ref, Path: path, Layers: size}
	if r.Digest, err = img.Digest(); err != nil {
		return Result{}, fmt.Errorf("images: %s: %w", spec.Name, err)
	}
	if r.Config, err = img.ConfigName(); err != nil {
		return Result{}, fmt.Errorf("images: %s: %w", spec.Name, err)
	}
	// Written whole, then renamed: a reader never sees half an image.
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return Result{}, fmt.Errorf("images: %w", err)
	}
	defer os.Remove(tmp)
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(f, h)}
	err = tarball.Write(tag, img, cw)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Result{}, fmt.Errorf("images: %s: %w", spec.Name, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return Result{}, fmt.Errorf("images: %w", err)
	}
	r.Bytes, r.SHA256 = cw.n, hex.EncodeToString(h.Sum(nil))
	return r, nil
}
