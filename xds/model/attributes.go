package model

import "strings"

// Attribute paths that policies may name in `when[].attribute`. They are the fields of the
// authorization input document (authz/policy builds it from Envoy's CheckRequest); Rego modules
// see the same document as `input`. Paths ending in "." take a key after the dot: a header name
// (lower case), a query parameter, or a nested JWT claim path like "jwt.claims.realm_access.roles".
var attributePaths = []string{
	"source.principal",      // SPIFFE ID of the calling workload, from its certificate
	"source.namespace",      // namespace part of source.principal
	"source.serviceAccount", // service-account part of source.principal
	"source.trustDomain",    // trust domain of source.principal
	"source.address",        // IP of the direct peer
	"destination.service",   // service being called
	"destination.namespace", // its namespace
	"destination.principal", // its SPIFFE ID
	"destination.port",      // port of the inbound listener
	"request.method",
	"request.path", // normalised, without query
	"request.host",
	"request.scheme",
	"request.protocol",
	"request.sni",
	"request.headers.", // + lower-case header name
	"request.query.",   // + query parameter name
	"request.time",     // RFC 3339
	"jwt.issuer",
	"jwt.subject",
	"jwt.providers",      // JWTProviders ("namespace/name") that verified the token
	"jwt.claims.",        // + claim path, dot-separated
	"apiKey.id",          // id of the verified API key (public; never the key)
	"apiKey.identity",    // identity the key is bound to
	"apiKey.provider",    // APIKeyProvider ("namespace/name") that verified the key
	"apiKey.attributes.", // + attribute name
}

// ValidAttributePath reports whether p names an attribute of the authorization input.
func ValidAttributePath(p string) bool {
	for _, a := range attributePaths {
		if strings.HasSuffix(a, ".") {
			if rest, ok := strings.CutPrefix(p, a); ok && rest != "" && !strings.HasPrefix(rest, ".") && !strings.HasSuffix(rest, ".") && !strings.Contains(rest, "..") {
				return true
			}
		} else if p == a {
			return true
		}
	}
	return false
}

// AttributePaths returns the attribute paths policies may use (prefixes end with ".").
func AttributePaths() []string { return append([]string(nil), attributePaths...) }

// Keys of the ext_authz context extensions the translator sets on every inbound route and the
// authorization service reads: they name the destination, so authorization never trusts a
// request header for it.
const (
	// ContextKeyService is the destination service's name.
	ContextKeyService = "service"
	// ContextKeyNamespace is the destination service's namespace.
	ContextKeyNamespace = "namespace"
	// ContextKeyPort is the service port the listener serves.
	ContextKeyPort = "port"
	// ContextKeyRateLimit lists, comma-separated, the verified attributes the route's rate limits
	// key on (VerifiedKey): the authorization service returns their values in the dynamic
	// metadata of an allowed request, under MetadataVerified.
	ContextKeyRateLimit = "ratelimit"
)

// MetadataVerified is the field of the authorization decision's dynamic metadata (namespace
// envoy.filters.http.ext_authz) holding the verified attributes a route asked for: a struct from
// each VerifiedKey's text to its value, which the rate limit descriptors read.
const MetadataVerified = "verified"

// What the translator and the authorization service agree on for requests Envoy decides itself
// (RBAC filters, Mesh.spec.authz.engine auto): Envoy names each RBAC policy NativePolicyID, each
// RBAC filter reports its result in dynamic metadata under its stat prefix, and the inbound
// listener's gRPC access log sends every such request to the authorization service under
// AccessLogName, tagged with the destination, which writes the decision-log record ext_authz
// would have written.
const (
	// AccessLogName is the log_name of the inbound listeners' decision access log.
	AccessLogName = "portcullis-decisions"
	// AccessLogTagService, AccessLogTagNamespace and AccessLogTagPort are the access log's custom
	// tags naming the destination (literal values the translator sets, never request data).
	AccessLogTagService   = "portcullis.service"
	AccessLogTagNamespace = "portcullis.namespace"
	AccessLogTagPort      = "portcullis.port"
	// RBACDenyPrefix and RBACAllowPrefix are the rules_stat_prefix of the RBAC filter holding
	// the DENY policies and of the one holding the ALLOW policies (their stats are
	// http.inbound.rbac.deny.* and .allow.*): Envoy writes <prefix>enforced_effective_policy_id
	// and <prefix>enforced_engine_result, and <prefix>shadow_* for shadow rules, under
	// envoy.filters.http.rbac.
	RBACDenyPrefix  = "deny."
	RBACAllowPrefix = "allow."
	// NativeDefaultPolicyID is the ALLOW filter's last policy under a mesh default of ALLOW:
	// it matches what no ALLOW policy did (Envoy tries policies in name order, and "~" sorts
	// after every namespace), so the ALLOW policy that matched is reported when one did.
	NativeDefaultPolicyID = "~default"
	// HeaderDecisionID carries the decision id to the application (allowed requests) and to the
	// client (every answer).
	HeaderDecisionID = "x-portcullis-decision-id"
	// JWTAuthnMetadata is where Envoy's jwt_authn filter, verifying tokens on routes Envoy
	// decides, writes a verified token's claims (under JWTPayloadKey) and why it refused one
	// (JWTFailedKey: {code, message}).
	JWTAuthnMetadata = "envoy.filters.http.jwt_authn"
	JWTPayloadKey    = "payload"
	JWTFailedKey     = "failed"
)

// NativePolicyID names a rule of a policy ("namespace/name") in Envoy's RBAC configuration:
// "namespace/name/rule", which response details and metadata report back.
func NativePolicyID(policy, rule string) string { return policy + "/" + rule }

// ParseNativePolicyID splits what NativePolicyID made.
func ParseNativePolicyID(id string) (policy, rule string, ok bool) {
	ns, rest, _ := strings.Cut(id, "/")
	name, rule, _ := strings.Cut(rest, "/")
	if ns == "" || name == "" || rule == "" || strings.Contains(rule, "/") {
		return "", "", false
	}
	return ns + "/" + name, rule, true
}
