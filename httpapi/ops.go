package httpapi

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// opsHandlers serves the operator endpoints: liveness, readiness, metrics and node status.
type opsHandlers struct {
	ops      OpsService
	registry *prometheus.Registry
}

func (o *opsHandlers) routes() []route {
	metrics := promhttp.HandlerFor(o.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return []route{
		{"/healthz", "/healthz", map[string]http.HandlerFunc{http.MethodGet: o.healthz}},
		{"/readyz", "/readyz", map[string]http.HandlerFunc{http.MethodGet: o.readyz}},
		{"/metrics", "/metrics", map[string]http.HandlerFunc{http.MethodGet: metrics.ServeHTTP}},
		{"/v1/status", "/v1/status", map[string]http.HandlerFunc{http.MethodGet: o.status}},
		{"/openapi.json", "/openapi.json", map[string]http.HandlerFunc{http.MethodGet: openAPIHandler()}}, // openapi.go
	}
}

// healthz says only that the process serves HTTP; whether it can serve files is /readyz's question.
func (o *opsHandlers) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz lets a load balancer take a node out of rotation while it cannot serve (e.g. no quorum).
func (o *opsHandlers) readyz(w http.ResponseWriter, r *http.Request) {
	if err := o.ops.Ready(r.Context()); err != nil {
		reason, detail := err.Error(), ""
		if nr, ok := errors.AsType[notReady](err); ok {
			reason, detail = nr.ReadyReason()
		}
		body := map[string]string{"status": "unavailable", "reason": reason}
		if detail != "" {
			body["detail"] = detail
		}
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// notReady is a readiness error that carries a stable reason (a short token for machines and
// metrics) apart from its human detail, as node.NotReadyError does.
type notReady interface {
	error
	ReadyReason() (reason, detail string)
}

func (o *opsHandlers) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, o.ops.Status(r.Context()))
}
