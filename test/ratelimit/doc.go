// Package ratelimit tests rate limits and CORS end to end, as users run them: the portcullis
// binary as control plane and a separate authorization service (which serves the global rate limit
// service) with a real Redis, agents with real Envoys, JWTs signed in the test, API keys made
// with `portcullis apikey`.
//
// The mesh: a frontend proxy (the test plays its application, calling its outbound ports), one
// proxy of service api (Local limits keyed on verified attributes, CORS) and two proxies of
// service backend (Global limits, fail closed and fail open).
package ratelimit
