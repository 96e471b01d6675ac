// Package e2e holds cairn's cross-language end-to-end checks: it runs the official JavaScript SDKs
// of the services cairn must be wire-compatible with (Extra Horizon's file service and the enmeshed
// Connector) against a real `cairn dev` cluster, using the flows in e2e/sdk. It owns no product
// code and imports none of cairn's product packages (only internal/testutil): it sees cairn only
// as a binary and an HTTP endpoint, as those applications do. Its tests need node and npm and the
// npm registry, so they run only when CAIRN_SDK_TEST=1 (`make sdk-test`) and skip otherwise,
// keeping `make test` offline.
package e2e
