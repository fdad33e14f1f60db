package cli

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/identity/securefile"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// DefaultRevocationName names the CredentialRevocation document a new revocation file holds.
const DefaultRevocationName = "revocations"

// revocationHeader heads every file the command writes: it rewrites the file whole.
const revocationHeader = "# Written by `portcullis revoke`, which rewrites this file whole (comments are not kept).\n"

// RevokeJWTRequest is one `portcullis revoke jwt`.
type RevokeJWTRequest struct {
	// File is the revocation file: created when missing, else holding one CredentialRevocation.
	File string
	// Namespace and Name of the document when the file is created; an existing file's must match
	// Namespace when it is set.
	Namespace, Name string
	// Entry is what to revoke; TokenFile, when set, fills its issuer, jti and expiry from a token.
	Entry     model.JWTRevocation
	TokenFile string
	// ConfigDir is the mesh directory to check the result against ("" skips the check).
	ConfigDir string
	Now       time.Time
}

// RevokeJWT adds a JWT revocation to the file, drops the entries that have expired, and writes
// the file atomically (a temporary file renamed over it, so a directory watcher never reads half
// of it). Concurrent runs on one file are serialised by a lock file beside it.
func RevokeJWT(out io.Writer, r RevokeJWTRequest) error {
	if r.TokenFile != "" {
		if err := fromToken(out, &r.Entry, r.TokenFile); err != nil {
			return err
		}
	}
	lock, err := securefile.Acquire(lockPath(r.File))
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	defer func() { _ = lock.Release() }()
	doc, err := readRevocations(r.File)
	if err != nil {
		return err
	}
	if doc == nil {
		doc = &model.CredentialRevocationDoc{
			TypeMeta: model.TypeMeta{APIVersion: model.APIVersion, Kind: model.KindCredentialRevocation},
			Metadata: model.ObjectMeta{Name: cmp.Or(r.Name, DefaultRevocationName), Namespace: cmp.Or(r.Namespace, model.DefaultRootNamespace)},
		}
	} else if r.Namespace != "" && r.Namespace != model.RefOf(doc).Namespace {
		return fmt.Errorf("revoke: %s holds the revocations of namespace %q, not %q: use another file per namespace", r.File, model.RefOf(doc).Namespace, r.Namespace)
	}
	pruned := prune(doc, r.Now)
	entries := &doc.Spec.JWTs
	replaced := false
	for i, e := range *entries {
		if e.Issuer == r.Entry.Issuer && e.JTI == r.Entry.JTI && e.Subject == r.Entry.Subject && equalTimes(e.IssuedBefore, r.Entry.IssuedBefore) {
			(*entries)[i], replaced = r.Entry, true
		}
	}
	if !replaced {
		*entries = append(*entries, r.Entry)
	}
	if errs := doc.Validate(); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = fmt.Sprintf("%s: %s", e.Field, e.Message)
		}
		return fmt.Errorf("revoke: the entry is not valid:\n  %s", strings.Join(msgs, "\n  "))
	}
	if !r.Entry.Live(r.Now) {
		return fmt.Errorf("revoke: --expires %s is already past: the entry would never apply", r.Entry.Expires.UTC().Format(time.RFC3339))
	}
	if err := writeRevocations(r.File, doc); err != nil {
		return err
	}
	verb := "added"
	if replaced {
		verb = "updated"
	}
	fmt.Fprintf(out, "%s %s to %s (CredentialRevocation %s): %d entries, %d expired removed\n",
		verb, describeRevocation(&r.Entry), r.File, model.RefOf(doc), len(doc.Spec.JWTs), pruned)
	if r.ConfigDir != "" {
		return checkInForce(out, r.ConfigDir, doc, &r.Entry)
	}
	return nil
}

// fromToken reads what to revoke from a token, without verifying it: the token only chooses the
// entry, and a forged one can only make the operator revoke a token that does not exist.
func fromToken(out io.Writer, e *model.JWTRevocation, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("revoke: --token-file: %w", err)
	}
	u, err := jwt.ParseUnverified(string(raw))
	if err != nil {
		return fmt.Errorf("revoke: --token-file %s: %w", path, err)
	}
	switch {
	case e.Issuer != "" && e.Issuer != u.Issuer:
		return fmt.Errorf("revoke: --issuer %q differs from the token's iss %q", e.Issuer, u.Issuer)
	case e.Subject == "" && e.JTI == "" && u.ID == "":
		return fmt.Errorf("revoke: the token has no jti: revoke its subject %q with --subject and --issued-before", u.Subject)
	}
	e.Issuer = u.Issuer
	if e.Subject == "" && e.JTI == "" {
		e.JTI = u.ID
	}
	if e.Expires.IsZero() && e.Subject == "" {
		if u.Expiry.IsZero() {
			return errors.New("revoke: the token has no exp: give --expires")
		}
		e.Expires = model.Time{Time: u.Expiry}
	}
	fmt.Fprintf(out, "read from %s WITHOUT verifying it (it only chooses what to revoke): iss %q, sub %q, jti %q, exp %s\n",
		path, u.Issuer, u.Subject, u.ID, formatTime(u.Expiry))
	return nil
}

// checkInForce loads the mesh directory with the new file, as the control plane will, and says
// whether the entry can apply: a mesh that does not load keeps the last good one live, without
// the revocation.
func checkInForce(out io.Writer, dir string, doc *model.CredentialRevocationDoc, e *model.JWTRevocation) error {
	m, err := LoadMesh(dir)
	if err != nil {
		return fmt.Errorf("revoke: the file is written, but %s does not load, so the revocation is NOT in force until it does:\n%w", dir, err)
	}
	ns := model.RefOf(doc).Namespace
	if ns == m.RootNamespace() {
		return nil
	}
	for _, p := range m.JWTProviders {
		if model.RefOf(p).Namespace == ns && p.Spec.Issuer == e.Issuer {
			return nil
		}
	}
	fmt.Fprintf(out, "warning: no JWTProvider of namespace %q has issuer %q, so this entry revokes nothing: a namespace's revocations apply to the tokens its own providers verify; the root namespace's (%q) to all\n",
		ns, e.Issuer, m.RootNamespace())
	return nil
}

// ListRevocations prints the entries of a revocation file, live or expired at now.
func ListRevocations(out io.Writer, file string, now time.Time) error {
	doc, err := readRevocations(file)
	if err != nil {
		return err
	}
	if doc == nil {
		return fmt.Errorf("revoke: %s does not exist", file)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ENTRY\tISSUER\tREVOKES\tEXPIRES\tSTATE\tREASON\n")
	for i, e := range doc.Spec.JWTs {
		state := "live"
		if !e.Live(now) {
			state = "expired"
		}
		fmt.Fprintf(tw, "%s spec.jwts[%d]\t%s\t%s\t%s\t%s\t%s\n", model.RefOf(doc), i, e.Issuer, revokes(&e), formatTime(e.Expires.Time), state, e.Reason)
	}
	return tw.Flush()
}

// readRevocations reads the one CredentialRevocation of a file; nil when the file is missing.
func readRevocations(file string) (*model.CredentialRevocationDoc, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	docs, problems := source.Decode(file, data)
	if len(problems) > 0 {
		return nil, fmt.Errorf("revoke: %w", problems)
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("revoke: %s holds %d documents; the command manages files of one CredentialRevocation", file, len(docs))
	}
	doc, ok := docs[0].Object.(*model.CredentialRevocationDoc)
	if !ok {
		return nil, fmt.Errorf("revoke: %s holds a %s, not a CredentialRevocation", file, docs[0].Object.GetKind())
	}
	return doc, nil
}

func writeRevocations(file string, doc *model.CredentialRevocationDoc) error {
	b, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	if err := securefile.WriteAtomic(file, append([]byte(revocationHeader), b...)); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	return nil
}

// prune drops the entries expired at now and returns how many.
func prune(doc *model.CredentialRevocationDoc, now time.Time) int {
	n := len(doc.Spec.JWTs)
	doc.Spec.JWTs = slices.DeleteFunc(doc.Spec.JWTs, func(e model.JWTRevocation) bool { return !e.Live(now) })
	return n - len(doc.Spec.JWTs)
}

// lockPath is the lock file beside a revocation file, hidden so mesh directories skip it.
func lockPath(file string) string {
	return filepath.Join(filepath.Dir(file), "."+filepath.Base(file)+".lock")
}

func revokes(e *model.JWTRevocation) string {
	if e.JTI != "" {
		return "jti " + e.JTI
	}
	return fmt.Sprintf("sub %s issued before %s", e.Subject, formatTime(e.IssuedBefore.Time))
}

func describeRevocation(e *model.JWTRevocation) string {
	return fmt.Sprintf("%s of %s until %s", revokes(e), e.Issuer, formatTime(e.Expires.Time))
}

func equalTimes(a, b *model.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b.Time)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// ParseTimeFlag reads a time flag: RFC 3339, "now", or a Go duration from now ("12h").
func ParseTimeFlag(name, v string, now time.Time) (*model.Time, error) {
	switch v {
	case "":
		return nil, nil
	case "now":
		// Rounded up to the second, as iat is: a token issued in this second is revoked too.
		return &model.Time{Time: now.UTC().Add(time.Second - time.Nanosecond).Truncate(time.Second)}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return &model.Time{Time: now.Add(d).UTC().Truncate(time.Second)}, nil
	}
	var t model.Time
	if err := t.UnmarshalText([]byte(v)); err != nil {
		return nil, fmt.Errorf("--%s: %w, \"now\" or a duration from now (\"12h\")", name, err)
	}
	return &t, nil
}
