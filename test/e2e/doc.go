// Package e2e runs the whole mesh as its users do — the portcullis binary as control plane,
// agents and a separate authorization service, real Envoys, real certificates — and checks what
// they see: mTLS between the proxies, identities reaching the application, allow and deny, rate
// limits, live reconfiguration, NACKs in proxy status, a control-plane restart that loses no
// request on an established path, tenants whose policies and JWT providers govern their own
// namespace only, and `portcullis revoke` refusing a token within 2 s where its scope reaches.
package e2e
