package server

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendJSON encodes the record as one JSON object, field for field what encoding/json makes
// of Record (TestRecordJSONMatchesEncodingJSON holds them together), without reflection: the
// decision log is written on every request, and reflection cost more than the decision itself.
func (r *Record) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"time":`...)
	b = append(b, '"')
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendField(b, "decision_id", r.DecisionID)
	b = appendField(b, "decision", r.Decision)
	b = appendField(b, "code", string(r.Code))
	b = append(b, `,"http_status":`...)
	b = strconv.AppendInt(b, int64(r.HTTPStatus), 10)
	b = appendOmitEmpty(b, "policy", r.Policy)
	b = appendOmitEmpty(b, "rule", r.Rule)
	b = appendField(b, "reason", r.Reason)
	b = appendOmitEmpty(b, "mesh_version", r.MeshVersion)
	// The rare, nested parts go through encoding/json.
	var err error
	if len(r.Audits) > 0 {
		if b, err = appendMarshaled(b, "audits", r.Audits); err != nil {
			return nil, err
		}
	}
	if r.DryRun != nil {
		if b, err = appendMarshaled(b, "dry_run", r.DryRun); err != nil {
			return nil, err
		}
	}
	if len(r.Errors) > 0 {
		if b, err = appendMarshaled(b, "errors", r.Errors); err != nil {
			return nil, err
		}
	}
	b = appendOmitEmpty(b, "caller", r.Caller)
	b = append(b, `,"source":{`...)
	b = appendMembers(b, "principal", r.Source.Principal, "address", r.Source.Address)
	b = append(b, `},"destination":{`...)
	b = appendMembers(b, "service", r.Destination.Service, "namespace", r.Destination.Namespace)
	if r.Destination.Port != 0 {
		if b[len(b)-1] != '{' {
			b = append(b, ',')
		}
		b = append(b, `"port":`...)
		b = strconv.AppendUint(b, uint64(r.Destination.Port), 10)
	}
	b = append(b, `},"request":{`...)
	b = appendMembers(b, "id", r.Request.ID, "method", r.Request.Method, "path", r.Request.Path, "host", r.Request.Host, "protocol", r.Request.Protocol)
	b = append(b, '}')
	if j := r.JWT; j != nil {
		b = append(b, `,"jwt":{`...)
		b = appendMembers(b, "issuer", j.Issuer, "subject", j.Subject, "kid", j.KeyID)
		if len(j.Providers) > 0 {
			if b[len(b)-1] != '{' {
				b = append(b, ',')
			}
			b = append(b, `"providers":[`...)
			for i, p := range j.Providers {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendString(b, p)
			}
			b = append(b, ']')
		}
		if b[len(b)-1] != '{' {
			b = append(b, ',')
		}
		b = append(b, `"cache_hit":`...)
		b = strconv.AppendBool(b, j.CacheHit)
		b = appendOmitEmpty(b, "error", j.Error)
		if rv := j.Revoked; rv != nil {
			b = append(b, `,"revoked":{`...)
			b = appendString(append(b, `"revocation":`...), rv.Revocation)
			b = appendString(append(b, `,"entry":`...), rv.Entry)
			b = appendOmitEmpty(b, "reason", rv.Reason)
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	if k := r.APIKey; k != nil {
		b = append(b, `,"api_key":{`...)
		b = appendMembers(b, "id", k.ID, "identity", k.Identity, "provider", k.Provider, "error", k.Error)
		b = append(b, '}')
	}
	b = appendOmitEmpty(b, "trace_id", r.TraceID)
	b = append(b, `,"duration_us":`...)
	b = strconv.AppendInt(b, r.DurationUS, 10)
	b = append(b, `,"eval_us":`...)
	b = strconv.AppendInt(b, r.EvalUS, 10)
	return append(b, '}'), nil
}

func appendField(b []byte, name, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

func appendOmitEmpty(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return appendField(b, name, v)
}

// appendMembers appends the non-empty name/value pairs of an object being written.
func appendMembers(b []byte, kv ...string) []byte {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		if b[len(b)-1] != '{' {
			b = append(b, ',')
		}
		b = appendString(b, kv[i])
		b = append(b, ':')
		b = appendString(b, kv[i+1])
	}
	return b
}

func appendMarshaled(b []byte, name string, v any) ([]byte, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return append(b, js...), nil
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaping as encoding/json does (including <, > and &,
// and U+2028/U+2029), with invalid UTF-8 replaced by U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
