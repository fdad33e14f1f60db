package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
)

// logFlushInterval bounds how long a decision waits in the buffer before it is written.
const logFlushInterval = 200 * time.Millisecond

// Record is one line of the decision log. It holds what explains a decision and nothing that is
// a secret: no token, no header value, no query string (which often carries tokens), no body.
type Record struct {
	Time        time.Time      `json:"time"`
	DecisionID  string         `json:"decision_id"`
	Decision    string         `json:"decision"`
	Code        policy.Code    `json:"code"`
	HTTPStatus  int            `json:"http_status"`
	Policy      string         `json:"policy,omitempty"`
	Rule        string         `json:"rule,omitempty"`
	Reason      string         `json:"reason"`
	MeshVersion string         `json:"mesh_version,omitempty"`
	Audits      []policy.Match `json:"audits,omitempty"`
	DryRun      *policy.DryRun `json:"dry_run,omitempty"`
	Errors      []string       `json:"errors,omitempty"`
	// Caller is the SPIFFE ID of the proxy that asked (the gRPC peer), which Source, read from
	// what that proxy sent, is only as true as.
	Caller      string        `json:"caller,omitempty"`
	Source      RecordSource  `json:"source"`
	Destination RecordDest    `json:"destination"`
	Request     RecordRequest `json:"request"`
	JWT         *RecordJWT    `json:"jwt,omitempty"`
	APIKey      *RecordAPIKey `json:"api_key,omitempty"`
	TraceID     string        `json:"trace_id,omitempty"`
	DurationUS  int64         `json:"duration_us"`
	EvalUS      int64         `json:"eval_us"`
}

// RecordSource is the caller.
type RecordSource struct {
	Principal string `json:"principal,omitempty"`
	Address   string `json:"address,omitempty"`
}

// RecordDest is the destination.
type RecordDest struct {
	Service   string `json:"service,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Port      uint32 `json:"port,omitempty"`
}

// RecordRequest is the request, without query, headers or body.
type RecordRequest struct {
	ID       string `json:"id,omitempty"`
	Method   string `json:"method,omitempty"`
	Path     string `json:"path,omitempty"`
	Host     string `json:"host,omitempty"`
	Protocol string `json:"protocol,omitempty"`
}

// RecordJWT is what the token said and whether it verified; never the token.
type RecordJWT struct {
	Issuer    string   `json:"issuer,omitempty"`
	Subject   string   `json:"subject,omitempty"`
	KeyID     string   `json:"kid,omitempty"`
	Providers []string `json:"providers,omitempty"`
	CacheHit  bool     `json:"cache_hit"`
	Error     string   `json:"error,omitempty"`
	// Revoked is the revocation entry that refused the (verified) token.
	Revoked *RecordRevocation `json:"revoked,omitempty"`
}

// RecordRevocation names the CredentialRevocation entry that matched a token.
type RecordRevocation struct {
	Revocation string `json:"revocation"` // namespace/name of the document
	Entry      string `json:"entry"`      // its field path, "spec.jwts[3]"
	Reason     string `json:"reason,omitempty"`
}

// RecordAPIKey is the presented API key by its public id, who holds it and why it was refused;
// never the key.
type RecordAPIKey struct {
	ID       string `json:"id,omitempty"`
	Identity string `json:"identity,omitempty"`
	Provider string `json:"provider,omitempty"`
	Error    string `json:"error,omitempty"`
}

func newRecord(d *policy.Decision, status int, a *policy.Attributes, jr *jwt.Result, kr *apikey.Result, traceID string, took time.Duration, now time.Time) *Record {
	r := &Record{
		Time: now.UTC(), DecisionID: d.ID, Decision: string(d.Outcome()), Code: d.Code, HTTPStatus: status,
		Policy: d.Policy, Rule: d.Rule, Reason: d.Reason, MeshVersion: d.MeshVersion,
		Audits: d.Audits, DryRun: d.DryRun, Errors: d.Errors, TraceID: traceID,
		DurationUS: took.Microseconds(), EvalUS: d.Duration.Microseconds(),
	}
	if a != nil {
		r.Source.Principal = a.Source.Principal
		if a.Source.Address.IsValid() {
			r.Source.Address = a.Source.Address.Unmap().String()
		}
		r.Destination = RecordDest{Service: a.Destination.Service, Namespace: a.Destination.Namespace, Port: a.Destination.Port}
		r.Request = RecordRequest{ID: a.Request.ID, Method: a.Request.Method, Path: a.Request.Path, Host: a.Request.Host, Protocol: a.Request.Protocol}
	}
	if jr != nil && jr.Presented {
		r.JWT = &RecordJWT{Issuer: jr.Issuer, KeyID: jr.KeyID, CacheHit: jr.CacheHit}
		if jr.Token != nil {
			r.JWT.Subject, r.JWT.Providers = jr.Token.Subject, jr.Token.Providers
		}
		if jr.Err != nil {
			r.JWT.Error = string(jr.Err.Code) + ": " + jr.Err.Detail
		}
	}
	if kr != nil && kr.Presented {
		r.APIKey = &RecordAPIKey{ID: kr.ID, Error: string(kr.Reason)}
		if kr.Key != nil {
			r.APIKey.Identity, r.APIKey.Provider = kr.Key.Identity, kr.Key.Provider
		}
	}
	return r
}

// DecisionLog writes records as JSON lines through a buffer that is flushed every
// logFlushInterval and on Close, so logging costs a request a copy, not a write(2).
type DecisionLog struct {
	log    *slog.Logger
	mu     sync.Mutex
	out    io.Writer
	w      *bufio.Writer
	failed bool // the last write failed (logged once until a write succeeds)
	errors func()
	stop   chan struct{}
	done   chan struct{}
	// buffers holds encode buffers, so a record costs no allocation once warm.
	buffers sync.Pool
}

// NewDecisionLog returns a decision log writing to w; onError (may be nil) is called for each
// record that could not be written.
func NewDecisionLog(w io.Writer, log *slog.Logger, onError func()) *DecisionLog {
	if onError == nil {
		onError = func() {}
	}
	l := &DecisionLog{log: log, out: w, w: bufio.NewWriterSize(w, 64<<10), errors: onError, stop: make(chan struct{}), done: make(chan struct{})}
	l.buffers.New = func() any { b := make([]byte, 0, 1024); return &b }
	go l.flushLoop()
	return l
}

func (l *DecisionLog) flushLoop() {
	defer close(l.done)
	t := time.NewTicker(logFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.Flush()
		}
	}
}

// Write appends one record.
func (l *DecisionLog) Write(r *Record) {
	bp := l.buffers.Get().(*[]byte)
	defer l.buffers.Put(bp)
	line, err := r.appendJSON((*bp)[:0])
	if err != nil {
		l.report(fmt.Errorf("encoding decision %s: %w", r.DecisionID, err))
		return
	}
	line = append(line, '\n')
	*bp = line
	l.mu.Lock()
	_, err = l.w.Write(line)
	if err != nil {
		l.w.Reset(l.out) // a bufio.Writer's error is sticky: start over with the next record
	}
	l.mu.Unlock()
	if err != nil {
		l.report(err)
	}
}

// Flush writes buffered records out.
func (l *DecisionLog) Flush() {
	l.mu.Lock()
	err := l.w.Flush()
	if err != nil {
		l.w.Reset(l.out)
	}
	recovered := err == nil && l.failed
	if recovered {
		l.failed = false
	}
	l.mu.Unlock()
	if err != nil {
		l.report(err)
	}
	if recovered {
		l.log.Info("decision log writable again")
	}
}

func (l *DecisionLog) report(err error) {
	l.errors()
	l.mu.Lock()
	first := !l.failed
	l.failed = true
	l.mu.Unlock()
	if first {
		l.log.Error("decision log write failed; decisions are still made, traced and counted", "err", err)
	}
}

// Close stops the flusher and writes what is buffered.
func (l *DecisionLog) Close(context.Context) error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("server: decision log: %w", err)
	}
	return nil
}

// OpenDecisionLog opens where decisions are written: stdout for "-" or "", else the file,
// appended to and owner-only (the log names callers and paths) — an existing file is
// tightened to 0600 too. close releases the file.
func OpenDecisionLog(path string, stdout io.Writer) (w io.Writer, closeLog func() error, err error) {
	if path == "-" || path == "" {
		return stdout, func() error { return nil }, nil
	}
	file, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("server: decision log: %w", err)
	}
	if err := file.Chmod(0o600); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("server: decision log: %w", err), file.Close())
	}
	return file, file.Close, nil
}
