// Package deploy holds what operators install next to cairn: the Prometheus recording and alerting
// rules with their unit tests, the Grafana dashboard, an example agent configuration
// (cairn.hcl), the systemd unit, and HAProxy configurations with and without TLS. It has no code
// of its own; its tests check these files with the real tools (promtool), and cmd/cairn's tests
// run them against real agents. Nothing here may be imported by cairn's packages.
package deploy
