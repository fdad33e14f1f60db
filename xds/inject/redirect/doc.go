// Package redirect is the pod's traffic redirection the injected init container installs
// (`portcullis-agent init-iptables`): the nat rules that send every inbound and outbound TCP
// connection through the proxy, except the proxy's own and what the pod excludes. It imports
// nothing of Kubernetes, so the sidecar build carries it and the proxy image serves as the init
// container's image too.
package redirect
