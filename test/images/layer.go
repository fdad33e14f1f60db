package images

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the time of every file in every layer and the images' creation time: a build's
// output depends on its inputs only.
var Epoch = time.Unix(0, 0).UTC()

// Entry is one file, directory or symbolic link of a layer.
type Entry struct {
	// Path is absolute, in the image.
	Path string
	// Src is a host file with the content of a regular file; Data is the content itself.
	Src  string
	Data []byte
	// Link makes the entry a symbolic link to Link.
	Link string
	// Dir makes the entry a directory.
	Dir bool
	// Mode is the permission bits. Zero means 0755 for directories and files whose source is
	// executable, 0644 for other files; symbolic links are always 0777.
	Mode fs.FileMode
}

// Layer is a named set of entries. Images that list the same Layer share one blob.
type Layer struct {
	Name    string
	Entries []Entry
}

// header is an entry made ready for the tar stream: its header and where its content comes from.
type header struct {
	tar.Header
	entry Entry
}

// headers returns the layer's entries as tar headers, sorted by path, with every parent
// directory present (0755 unless listed). Two entries for one path are an error unless both
// are the same directory.
func (l Layer) headers() ([]header, error) {
	byPath := map[string]header{}
	add := func(h header) error {
		if old, ok := byPath[h.Name]; ok {
			if old.Typeflag == tar.TypeDir && h.Typeflag == tar.TypeDir && old.Mode == h.Mode {
				return nil
			}
			return fmt.Errorf("images: layer %s: %s listed twice", l.Name, h.Name)
		}
		byPath[h.Name] = h
		return nil
	}
	for _, e := range l.Entries {
		if !path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path || e.Path == "/" {
			return nil, fmt.Errorf("images: layer %s: path %q is not a clean absolute file path", l.Name, e.Path)
		}
		h, err := e.header()
		if err != nil {
			return nil, fmt.Errorf("images: layer %s: %w", l.Name, err)
		}
		if err := add(h); err != nil {
			return nil, err
		}
	}
	// Parent directories, unless an entry made them.
	for p := range byPath {
		for dir := path.Dir("/" + p); dir != "/"; dir = path.Dir(dir) {
			name := strings.TrimPrefix(dir, "/") + "/"
			if _, ok := byPath[name]; !ok {
				byPath[name] = header{Header: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: Epoch}}
			}
		}
	}
	out := make([]header, 0, len(byPath))
	for _, h := range byPath {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// header returns e's tar header; names are relative ("usr/local/bin/x"), directories end in "/".
func (e Entry) header() (header, error) {
	name := strings.TrimPrefix(e.Path, "/")
	h := tar.Header{Name: name, ModTime: Epoch}
	switch {
	case e.Link != "":
		h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.Link, 0o777
	case e.Dir:
		h.Typeflag, h.Name, h.Mode = tar.TypeDir, name+"/", 0o755
		if e.Mode != 0 {
			h.Mode = int64(e.Mode.Perm())
		}
		if e.Mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000 // e.g. /tmp
		}
	case e.Src != "":
		fi, err := os.Stat(e.Src)
		if err != nil {
			return header{}, fmt.Errorf("%s: %w", e.Path, err)
		}
		if !fi.Mode().IsRegular() {
			return header{}, fmt.Errorf("%s: source %s is not a regular file", e.Path, e.Src)
		}
		h.Typeflag, h.Size, h.Mode = tar.TypeReg, fi.Size(), 0o644
		if fi.Mode()&0o111 != 0 {
			h.Mode = 0o755
		}
	default:
		h.Typeflag, h.Size, h.Mode = tar.TypeReg, int64(len(e.Data)), 0o644
	}
	if e.Mode != 0 && h.Typeflag == tar.TypeReg {
		h.Mode = int64(e.Mode.Perm())
	}
	return header{Header: h, entry: e}, nil
}

// writeTar writes the layer as a tar stream: sorted entries, owner root, every time Epoch.
func (l Layer) writeTar(w io.Writer) error {
	hs, err := l.headers()
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, h := range hs {
		if err := tw.WriteHeader(&h.Header); err != nil {
			return fmt.Errorf("images: layer %s: %s: %w", l.Name, h.Name, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if err := copyContent(tw, h); err != nil {
			return fmt.Errorf("images: layer %s: %s: %w", l.Name, h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("images: layer %s: %w", l.Name, err)
	}
	return nil
}

func copyContent(w io.Writer, h header) error {
	if h.entry.Src == "" {
		_, err := w.Write(h.entry.Data)
		return err
	}
	f, err := os.Open(h.entry.Src)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, f)
	if err == nil && n != h.Size {
		err = fmt.Errorf("source %s changed size while building (%d, then %d bytes)", h.entry.Src, h.Size, n)
	}
	return err
}

// fileLayer is an uncompressed layer in a file: what the harness imports (no gzip to spend CPU
// on; containerd takes either). Its digest and diff ID are both the tar's sha256.
type fileLayer struct {
	path   string
	digest v1.Hash
	size   int64
}

// writeFileLayer writes l's tar to file p and returns it as an uncompressed layer.
func writeFileLayer(l Layer, p string) (*fileLayer, error) {
	f, err := os.Create(p)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(f, h)}
	err = l.writeTar(cw)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return &fileLayer{path: p, size: cw.n, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}, nil
}

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.path) }

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
