// Package pace paces byte streams with a token bucket (golang.org/x/time/rate), for background
// work that must not take a disk's or a network's whole bandwidth: repair's shard copies and the
// scrubber's reads. It holds no state of its own beyond the limiter it is given.
package pace
