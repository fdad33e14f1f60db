package inject_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/portcullis/portcullis/xds/inject"
)

// FuzzWebhook: whatever the API server (or anyone reaching the port) sends, the injector
// answers — an AdmissionReview or a 4xx — and never panics; a review it answers carries the
// request's UID, and a patch only ever comes with Allowed.
func FuzzWebhook(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"kind":"Pod"},"operation":"CREATE","namespace":"demo","object":{"metadata":{"name":"p","annotations":{"portcullis.dev/inject":"true"}},"spec":{"containers":[{"name":"app","image":"x","ports":[{"containerPort":8080}]}]}}}}`))
	f.Add([]byte(`{"request":{"uid":"2","kind":{"kind":"Pod"},"operation":"CREATE","object":{"spec":{"hostNetwork":true,"containers":[{"name":"a"}]},"metadata":{"annotations":{"portcullis.dev/inject":"true"}}}}}`))
	f.Add([]byte(`{"request":{"uid":"3","kind":{"kind":"Pod"},"operation":"CREATE","object":"not a pod"}}`))
	f.Add([]byte(`{"request":null}`))
	f.Add([]byte(`[`))
	h := &inject.Webhook{Config: testConfig(), Namespaces: func(context.Context, string) (map[string]string, error) {
		return map[string]string{"portcullis.dev/inject": "enabled"}, nil
	}}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			if rec.Code < 400 || rec.Code > 499 {
				t.Fatalf("status %d for %q", rec.Code, body)
			}
			return
		}
		var in, out admissionv1.AdmissionReview
		_ = json.Unmarshal(body, &in)
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("answer is not an AdmissionReview: %v %s", err, rec.Body.Bytes())
		}
		if in.Request != nil && out.Response.UID != in.Request.UID {
			t.Fatalf("UID %q answered as %q", in.Request.UID, out.Response.UID)
		}
		if len(out.Response.Patch) > 0 && !out.Response.Allowed {
			t.Fatal("a patch on a refusal")
		}
	})
}
