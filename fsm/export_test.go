package fsm

// StoreMetrics is pebble's report on f's store (levels, block cache hits and misses, filters),
// for BenchmarkMetadataScale's -fsm.metrics.
func StoreMetrics(f *FSM) string { return f.db.Load().db.Metrics().String() }
