// Package rql parses and evaluates the Resource Query Language of the Extra Horizon file service
// (the RQL of Persvr), as used by the admin listing GET /files/v1/?<RQL>. It owns the wire syntax
// (calls joined by & and |, the FIQL shorthand, the SDK's double percent-encoding), the typing of
// values by the kinds the caller declares for its fields, and the in-memory evaluation: filtering,
// sorting and paging of records. It must not know the file schema, HTTP or storage: the caller
// declares the queryable fields, hands in the raw query string and the records, and maps ErrInvalid
// to its own error format. Parsing is bounded in length, depth and node count, so outside input can
// neither blow the stack nor make it work hard.
package rql
