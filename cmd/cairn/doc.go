// Command cairn is the one binary of the cairn distributed file store: `cairn agent` runs a node,
// `cairn dev` runs a ready 3-node cluster in one process, `cairn tls` makes certificates, and the
// other subcommands talk to a running cluster's HTTP API.
//
// It owns the command line and nothing below it: flags, CAIRN_* variables and the config file
// map onto node.Config, whose defaults and validation live in node; the client subcommands use
// only the public HTTP API, never a node's internals, so they work against any node of any
// version that speaks the same API. No product rule lives here.
package main
