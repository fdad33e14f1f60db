// Package demorun tests `make demo` as a new user meets it: it runs the real target (the build,
// the tool cache, the demo's control plane, agents, Envoys and Jaeger with its UI), runs every
// command the demo prints exactly as printed, reads a denied request's trace by its decision id
// in headless Chromium from both Jaeger's UI and the control plane's /traces, and stops the demo
// with SIGINT sent to make alone and to make's whole process group, checking that nothing is
// left running or in /dev/shm. The demo binds fixed loopback ports, so the tests here run one
// after the other and fail when something else holds those ports.
package demorun
