// Package httpapi owns cairn's public HTTP surface: the Extra Horizon-compatible /files/v1
// front-end (with its admin listing and settings), the enmeshed Connector-compatible /api/v2
// front-end, cairn's administration routes under /v1 (API keys, signing-key rotation, node
// removal), the ops endpoints (/healthz, /readyz, /metrics, /v1/status) and the middleware around
// them (panic recovery, per-route metrics, request logging, one read scope per request). Each
// front-end is a thin adapter: it parses the wire format, calls the use cases of package core
// through the small interfaces declared here, and maps core's sentinel errors to its own error
// format in exactly one function. It must not talk to Raft, peers or disks, must not hold product
// rules or check permissions (those live in core), and must never put a token, API key or raw
// request path into a log line, a metric label or an error message.
package httpapi
