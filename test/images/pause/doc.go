// Command pause is the pod sandbox's process (containerd's CRI sandbox_image): it holds the
// pod's namespaces, reaps the children reparented to it when it is the pod's PID 1, and exits
// on SIGTERM or SIGINT. Built static (CGO_ENABLED=0), it is the whole of the pause image.
package main
