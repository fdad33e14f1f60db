// Package pattern holds what the parts of a policy rule compile to: principal and host patterns,
// path globs, address ranges, time windows and value operators. It knows strings, addresses and
// times, not requests, so the engine (authz/policy) and the linter (authz/policy/lint) share one
// definition of what a pattern matches; the Covers methods answer the linter's question ("does
// this list match everything that pattern does?") beside the matching they must agree with.
package pattern
