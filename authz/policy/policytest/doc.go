// Package policytest runs policy tests written in YAML (`portcullis policy test`), the way `opa
// test` runs Rego tests: each *_test.yaml file names a mesh directory and lists requests with the
// decision expected; failures are explained rule by rule (authz/policy/explain). Its request
// format (RequestSpec) is also what `portcullis policy explain --request` reads.
package policytest
