package clustermesh

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// Forward is a port forwarded to a pod, as `kubectl port-forward` does: the connection arrives
// on the pod's loopback, so it reaches the application without passing its proxy (which under
// STRICT mTLS refuses plaintext from outside the mesh).
type Forward struct {
	// Addr is the local 127.0.0.1:port.
	Addr   string
	stop   chan struct{}
	errOut *bytes.Buffer
}

// ForwardPort forwards a local port on 127.0.0.1 (chosen by the OS when local is 0) to port of
// the pod until Close.
func ForwardPort(cfg *rest.Config, k kubernetes.Interface, ns, pod string, local, port int) (*Forward, error) {
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("clustermesh: port-forward: %w", err)
	}
	url := k.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	f := &Forward{stop: make(chan struct{}), errOut: &bytes.Buffer{}}
	ready := make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{strconv.Itoa(local) + ":" + strconv.Itoa(port)}, f.stop, ready, io.Discard, f.errOut)
	if err != nil {
		return nil, fmt.Errorf("clustermesh: port-forward: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		return nil, fmt.Errorf("clustermesh: port-forward to %s/%s:%d: %v %s", ns, pod, port, err, f.errOut)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		close(f.stop)
		return nil, fmt.Errorf("clustermesh: port-forward: %v", err)
	}
	f.Addr = "127.0.0.1:" + strconv.Itoa(int(ports[0].Local))
	return f, nil
}

// Close stops forwarding.
func (f *Forward) Close() { close(f.stop) }
