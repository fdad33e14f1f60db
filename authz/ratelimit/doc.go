// Package ratelimit is the global rate limit service: Envoy's rate limit service API
// (envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit) with token buckets in Redis, shared
// by every proxy of a service. The authorization service serves it next to ext_authz, on the same
// port and credentials, so proxies reach it through the cluster they already have.
//
// Each descriptor Envoy sends carries its limit's name and bucket (model.RateLimitEntryLimit,
// model.RateLimitEntryBucket): the service keeps no copy of the documents, and a changed limit takes
// effect with the route that carries it. All the descriptors of a request are decided in one Lua
// script — one Redis round trip — all or nothing: a request takes a token from every bucket it
// matches or, when any is empty, from none.
//
// When Redis cannot answer, ShouldRateLimit returns UNAVAILABLE and Envoy applies the limit's
// failure mode (the filter the route put it on: fail open or fail closed with 503). Every call is
// counted by outcome in metrics, and traced as a child of Envoy's span.
package ratelimit
