package policy

import (
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"time"

	"github.com/portcullis/portcullis/xds/model"
)

// Code classifies a decision. It is a metric label, a log field and decides the HTTP status the
// server answers a denial with.
type Code string

// Decision codes.
const (
	CodeAllowed        Code = "allowed"         // an ALLOW policy matched
	CodeAllowedDefault Code = "allowed_default" // no ALLOW matched; the mesh default is ALLOW
	CodeDenied         Code = "denied"          // a DENY policy matched (403)
	CodeDeniedDefault  Code = "denied_default"  // no ALLOW matched; the mesh default is DENY (403)
	CodeJWTRequired    Code = "jwt_required"    // denied by default, and a token would have helped (401)
	CodeJWTInvalid     Code = "jwt_invalid"     // the request carried a token that failed verification (401)
	CodeRevoked        Code = "revoked"         // the credential was revoked (401)
	CodeBadRequest     Code = "bad_request"     // the request could not be read (400)
	CodeAPIKeyInvalid  Code = "api_key_invalid" // the request carried an API key that failed verification (401)
	CodeUnavailable    Code = "unavailable"     // no valid mesh is loaded yet (503)
	CodeError          Code = "error"           // the server failed; fails closed (500)
)

// Codes lists every code, for metrics and documentation.
var Codes = []Code{CodeAllowed, CodeAllowedDefault, CodeDenied, CodeDeniedDefault, CodeJWTRequired, CodeJWTInvalid, CodeRevoked, CodeBadRequest, CodeAPIKeyInvalid, CodeUnavailable, CodeError}

// Decision is the outcome for one request: what was decided, by which policy and rule, and why.
// The ID names it in the response, the decision log and the trace.
type Decision struct {
	ID    string `json:"id"`
	Allow bool   `json:"allow"`
	Code  Code   `json:"code"`
	// Policy ("namespace/name") and Rule that decided; both empty for the mesh default and for
	// decisions made before policies (bad request, invalid token).
	Policy string `json:"policy,omitempty"`
	Rule   string `json:"rule,omitempty"`
	// Reason is a short human explanation, safe to log (never a token or header value).
	Reason string `json:"reason"`
	// MeshVersion is the version of the mesh the engine was compiled from.
	MeshVersion string `json:"meshVersion,omitempty"`
	// Audits are the AUDIT policies that matched.
	Audits []Match `json:"audits,omitempty"`
	// DryRun is set when dry-run policies apply: what they matched and the decision that would
	// have been made had they been enforced.
	DryRun *DryRun `json:"dryRun,omitempty"`
	// Errors are Rego evaluation errors (each failed closed).
	Errors []string `json:"errors,omitempty"`
	// Duration is the time spent evaluating policies; in JSON, evalUs in microseconds (as the
	// decision log and the authz.eval_us span attribute).
	Duration time.Duration `json:"-"`
}

// MarshalJSON writes the decision with its evaluation time in microseconds.
func (d Decision) MarshalJSON() ([]byte, error) {
	type plain Decision // without this method
	return json.Marshal(struct {
		plain
		EvalUs int64 `json:"evalUs"`
	}{plain(d), d.Duration.Microseconds()})
}

// Match names a matching policy and rule.
type Match struct {
	Policy string       `json:"policy"`
	Action model.Action `json:"action"`
	Rule   string       `json:"rule"`
	Reason string       `json:"reason,omitempty"`
}

// DryRun is what dry-run policies would have done.
type DryRun struct {
	// Matches are the dry-run policies that matched.
	Matches []Match `json:"matches"`
	// Allow, Code, Policy and Rule are the decision had every dry-run policy been enforced.
	Allow  bool   `json:"allow"`
	Code   Code   `json:"code"`
	Policy string `json:"policy,omitempty"`
	Rule   string `json:"rule,omitempty"`
	// Changed is true when enforcing them would change the decision.
	Changed bool `json:"changed"`
}

// Outcome is ALLOW or DENY, as logged.
func (d *Decision) Outcome() model.Decision {
	if d.Allow {
		return model.DecisionAllow
	}
	return model.DecisionDeny
}

// crockford is the ULID alphabet: no I, L, O, U, so IDs read aloud or typed survive.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewDecisionID returns a new ULID-shaped id (26 characters): 48 bits of milliseconds, so ids
// sort by time in logs, and 80 random bits from the runtime's ChaCha8 generator, which needs no
// system call. Ids identify decisions; they are not secrets.
func NewDecisionID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	binary.BigEndian.PutUint16(b[6:], uint16(rand.Uint32()))
	binary.BigEndian.PutUint64(b[8:], rand.Uint64())
	var out [26]byte
	// 128 bits as 26 base32 digits, the first taking the top 3 bits.
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
