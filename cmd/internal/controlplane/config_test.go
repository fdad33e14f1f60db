package controlplane

import (
	"net"
	"strings"
	"testing"
)

func TestAuthzTargetIsNeverAnUnspecifiedAddress(t *testing.T) {
	kube := &KubernetesConfig{Namespace: "portcullis-system", Service: "portcullis-controlplane"}
	tcp := func(s string) net.Addr {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, tc := range []struct {
		name    string
		cfg     Config
		bound   string
		want    string
		wantErr string
	}{
		{name: "loopback", bound: "127.0.0.1:15011", want: "127.0.0.1:15011"},
		{name: "a host address", bound: "10.1.2.3:15011", want: "10.1.2.3:15011"},
		// deploy/ listens on 0.0.0.0: proxies must dial the Service, not [::] (themselves).
		{name: "kubernetes, every interface", cfg: Config{Kubernetes: kube}, bound: "0.0.0.0:15011", want: "portcullis-controlplane.portcullis-system.svc:15011"},
		{name: "kubernetes, every IPv6 interface", cfg: Config{Kubernetes: kube}, bound: "[::]:15011", want: "portcullis-controlplane.portcullis-system.svc:15011"},
		{name: "advertised", cfg: Config{AuthzAdvertiseAddr: "authz.example:443"}, bound: "0.0.0.0:15011", want: "authz.example:443"},
		{name: "external", cfg: Config{ExternalAuthz: "authz:15011"}, bound: "0.0.0.0:15011", want: "authz:15011"},
		{name: "local, every interface", bound: "0.0.0.0:15011", wantErr: "--authz-advertise-addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.authzTarget(tcp(tc.bound))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("authzTarget(%s) = %q, %v; want an error naming %s", tc.bound, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("authzTarget(%s) = %q, %v; want %q", tc.bound, got, err, tc.want)
			}
		})
	}
}
