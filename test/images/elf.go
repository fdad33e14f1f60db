package images

import (
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// libraryDirs are where the dynamic loader of a Debian amd64 system looks, in its order.
var libraryDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// RootFS is a directory holding a Debian file tree (dpkg -x of packages): the shared libraries,
// loader and tools the images take, so that what they hold does not depend on the host's
// installation.
type RootFS string

// file returns the root's entry for image path p: a regular file or a symbolic link as it is
// in the root (links are kept as links, so the image has the same names as a Debian system).
func (r RootFS) file(p string) (Entry, error) {
	host := filepath.Join(string(r), p)
	fi, err := os.Lstat(host)
	if err != nil {
		return Entry{}, fmt.Errorf("images: %s not in %s: %w", p, r, err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(host)
		if err != nil {
			return Entry{}, fmt.Errorf("images: %w", err)
		}
		return Entry{Path: p, Link: target}, nil
	case fi.Mode().IsRegular():
		return Entry{Path: p, Src: host}, nil
	default:
		return Entry{}, fmt.Errorf("images: %s in %s is neither a file nor a link", p, r)
	}
}

// Files returns entries for the image paths, each with every link on its way to a regular file
// followed inside the root (the link and its target both in the image).
func (r RootFS) Files(paths ...string) ([]Entry, error) {
	var out []Entry
	seen := map[string]bool{}
	for _, p := range paths {
		chain, err := r.chain(p)
		if err != nil {
			return nil, err
		}
		for _, e := range chain {
			if !seen[e.Path] {
				seen[e.Path] = true
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// chain returns the entries from image path p through its links to a regular file, resolving
// every link inside the root (an absolute link names an image path, never a host one).
func (r RootFS) chain(p string) ([]Entry, error) {
	var out []Entry
	for hops := 0; ; hops++ {
		if hops > 16 {
			return nil, fmt.Errorf("images: %s: too many links", p)
		}
		e, err := r.file(p)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		if e.Link == "" {
			return out, nil
		}
		if p = e.Link; !path.IsAbs(p) {
			p = path.Join(path.Dir(e.Path), p)
		}
	}
}

// Glob returns the image paths under dir (an image path) whose base name matches pattern.
func (r RootFS) Glob(dir, pattern string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(string(r), dir, pattern))
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	out := make([]string, 0, len(matches))
	for _, m := range matches {
		out = append(out, path.Join(dir, filepath.Base(m)))
	}
	return out, nil
}

// SharedLibraries returns the image paths of the dynamic loader and every shared library the
// ELF files need, transitively (DT_NEEDED), found in the root. The files themselves are host
// paths (a binary from elsewhere, e.g. Envoy) or, when they start with the root, files of it.
// Static executables need nothing. A library the root lacks is an error naming who needs it.
func (r RootFS) SharedLibraries(files ...string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	queue := slices.Clone(files)
	for len(queue) > 0 {
		file := queue[0]
		queue = queue[1:]
		interp, needed, err := dynamicDeps(file)
		if err != nil {
			return nil, err
		}
		if interp != "" && !seen[interp] {
			seen[interp] = true
			out = append(out, interp)
		}
		for _, lib := range needed {
			p, err := r.findLibrary(lib)
			if err != nil {
				return nil, fmt.Errorf("images: %s needs %s: %w", file, lib, err)
			}
			if seen[p] {
				continue
			}
			seen[p] = true
			out = append(out, p)
			chain, err := r.chain(p)
			if err != nil {
				return nil, err
			}
			queue = append(queue, chain[len(chain)-1].Src)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (r RootFS) findLibrary(name string) (string, error) {
	if strings.Contains(name, "/") {
		return "", fmt.Errorf("library names with a path are not supported")
	}
	for _, dir := range libraryDirs {
		p := path.Join(dir, name)
		if _, err := r.chain(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("not in %s under %s", strings.Join(libraryDirs, ", "), r)
}

// dynamicDeps returns an ELF file's interpreter (the loader) and DT_NEEDED libraries.
func dynamicDeps(file string) (interp string, needed []string, err error) {
	f, err := elf.Open(file)
	if err != nil {
		return "", nil, fmt.Errorf("images: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", nil, fmt.Errorf("images: %s: interpreter: %w", file, err)
		}
		interp = strings.TrimRight(string(b), "\x00")
	}
	needed, err = f.ImportedLibraries()
	if err != nil {
		return "", nil, fmt.Errorf("images: %s: %w", file, err)
	}
	return interp, needed, nil
}
