package fsm

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkHotReads measures the reads every request makes besides its own rows: the cluster
// config (the placer and the service read it per upload) and the API key of the request, and
// an apply batch of 16 creates, which starts from the meta row. The store holds 20,000 files.
func BenchmarkHotReads(b *testing.B) {
	const files = 20000
	f := fsmWithFiles(b, files)
	b.Run("Config", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := f.Config(); !ok {
				b.Fatal("no config")
			}
		}
	})
	b.Run("APIKeyBySecret", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := f.APIKeyBySecret("root-secret"); !ok {
				b.Fatal("the root key is unknown")
			}
		}
	})
	b.Run("ApplyBatch16", func(b *testing.B) {
		next := uint64(files + 2)
		batch := make([]*raft.Log, 16)
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			for j := range batch {
				id := fmt.Sprintf("FILb%016d", next)
				batch[j] = cmdLog(next, mustEncode(b, CmdCreateFile, "r"+id, t0, fileCmd(id)))
				next++
			}
			b.StartTimer()
			f.ApplyBatch(batch)
		}
	})
}
