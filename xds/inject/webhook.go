package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxReviewBytes bounds an AdmissionReview body (the API server's own request limit is 3 MiB).
const MaxReviewBytes = 3 << 20

// NamespaceLabels returns the labels of a namespace.
type NamespaceLabels func(ctx context.Context, name string) (map[string]string, error)

// Webhook serves the mutating admission webhook (POST /inject).
type Webhook struct {
	Config     *Config
	Namespaces NamespaceLabels
	Logger     *slog.Logger
}

// ServeHTTP answers one AdmissionReview.
func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxReviewBytes+1))
	if err != nil || len(body) > MaxReviewBytes {
		http.Error(w, "request too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	resp := h.review(r.Context(), review.Request)
	resp.UID = review.Request.UID
	out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out) // the API server times out on its side when the connection fails
}

func (h *Webhook) log() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

func (h *Webhook) review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return allow
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(http.StatusBadRequest, fmt.Sprintf("portcullis: pod does not decode: %v", err))
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	labels, err := h.Namespaces(ctx, pod.Namespace)
	if err != nil {
		// Failure policy decides: Fail for labelled namespaces, Ignore elsewhere (docs/kubernetes.md).
		return deny(http.StatusInternalServerError, fmt.Sprintf("portcullis: reading namespace %s: %v", pod.Namespace, err))
	}
	if !Wanted(&pod, labels) || Injected(&pod) {
		return allow
	}
	injected, err := h.Config.Inject(&pod)
	if errors.Is(err, ErrRefused) {
		h.log().Warn("pod refused", "pod", describe(&pod), "reason", err.Error())
		return deny(http.StatusForbidden, "portcullis: "+err.Error())
	}
	if err != nil {
		return deny(http.StatusInternalServerError, "portcullis: "+err.Error())
	}
	patch, err := createPatch(req.Object.Raw, injected)
	if err != nil {
		return deny(http.StatusInternalServerError, "portcullis: "+err.Error())
	}
	h.log().Info("pod injected", "pod", describe(&pod))
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt}
}

func createPatch(original []byte, injected *corev1.Pod) ([]byte, error) {
	modified, err := json.Marshal(injected)
	if err != nil {
		return nil, err
	}
	ops, err := jsonpatch.CreatePatch(original, modified)
	if err != nil {
		return nil, err
	}
	return json.Marshal(ops)
}

func deny(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: msg}}
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }
