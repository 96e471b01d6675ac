// Package pki makes and loads the X.509 material cairn runs on: a cluster CA, server certificates
// (used on the public HTTPS port and, naming the server role, on the cluster port), client
// certificates, and a key pair that reloads from its files without a restart.
//
// It only creates, parses and checks certificates with the standard library's crypto/x509; it
// must not open sockets or decide who may talk to whom (that is cluster and node).
package pki
