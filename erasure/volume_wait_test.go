package erasure

import (
	"sync"
	"testing"
	"time"
)

// commitShard writes and commits one shard; for goroutines, which must not call t.Fatal.
func commitShard(s *ShardStore, id ShardID, body []byte) error {
	w, err := s.Create(id)
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// commitPromptly commits one shard and fails the test if that takes longer than a deadline far
// below the hour-long commit waits these tests set.
func commitPromptly(t *testing.T, s *ShardStore, id ShardID, body []byte) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- commitShard(s, id, body) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("commit of %s waited for company it was never going to get", id)
	}
}

func (vs *volumeSet) isWaiting() bool {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.flusherWaiting
}

func (vs *volumeSet) queuedRecords() int {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return len(vs.pending)
}

// TestGroupCommitWaitsOnlyWhenBusy: with a commit wait of an hour (beyond what Validate allows,
// so that any wait would show), a write with no write before it and a write long after the last
// one are flushed at once. A write right after another waits, the records that queue meanwhile
// share its fdatasync, and the wait ends when groupCommitEnough records are pending. Closing the
// store ends a wait too, with every record durable.
func TestGroupCommitWaitsOnlyWhenBusy(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenShardStoreWith(dir, smallVolumes)
	if err != nil {
		t.Fatal(err)
	}
	vs := s.vols
	vs.commitWait = time.Hour
	size := func(id ShardID) int { return 500 + 7*id.Segment }
	var all []ShardID

	first := ShardID{File: "FILwait", Segment: 0, Index: 0}
	commitPromptly(t, s, first, testShard(first, size(first)))
	// An idle store: the last record queued, and the last batch ended, two hours ago.
	vs.mu.Lock()
	vs.lastArrival = vs.lastArrival.Add(-2 * time.Hour)
	vs.lastBatchEnd = vs.lastBatchEnd.Add(-2 * time.Hour)
	vs.mu.Unlock()
	second := ShardID{File: "FILwait", Segment: 1, Index: 0}
	commitPromptly(t, s, second, testShard(second, size(second)))
	all = append(all, first, second)
	if st := s.VolumeStats(); st.Waits != 0 || st.Fsyncs != 2 {
		t.Fatalf("a lone writer waited: %+v", st)
	}

	errs := make(chan error, 64)
	var wg sync.WaitGroup
	next := 2
	commit := func() {
		id := ShardID{File: "FILwait", Segment: next, Index: 1}
		next++
		all = append(all, id)
		wg.Go(func() { errs <- commitShard(s, id, testShard(id, size(id))) })
	}
	// The batch of second just ended, so the next flusher waits for company; a batch one short
	// of enough keeps it waiting.
	commit()
	waitUntil(t, "the flusher waits for more records", vs.isWaiting)
	for range groupCommitEnough - 2 {
		commit()
	}
	waitUntil(t, "the records queue behind the waiting flusher", func() bool { return vs.queuedRecords() == groupCommitEnough-1 })
	if st := s.VolumeStats(); st.Fsyncs != 2 {
		t.Fatalf("a record was synced while the flusher waited: %+v", st)
	}
	commit() // enough: the batch goes without waiting out the hour
	waitUntil(t, "a batch of groupCommitEnough is synced", func() bool { return s.VolumeStats().Fsyncs == 3 })
	wg.Wait()
	if st := s.VolumeStats(); st.Waits != 1 || st.Records != int64(2+groupCommitEnough) {
		t.Fatalf("want %d records in one waited batch with one fdatasync: %+v", groupCommitEnough, st)
	}

	// The batch just ended, so the next one waits again, until Close.
	commit()
	waitUntil(t, "the next flusher waits", vs.isWaiting)
	commit()
	waitUntil(t, "a second record queues", func() bool { return vs.queuedRecords() == 2 })
	s.Close() // ends the wait: the batch is written and synced, then the files close
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a commit queued before Close failed: %v", err)
		}
	}
	if st := s.VolumeStats(); st.Waits != 2 || st.Fsyncs != 4 || st.Records != int64(len(all)) {
		t.Fatalf("want the last two records in one waited batch: %+v", st)
	}

	s = openStoreWith(t, dir, smallVolumes)
	for _, id := range all {
		mustRead(t, s, id, testShard(id, size(id)))
	}
}

func TestGroupCommitWaitValidated(t *testing.T) {
	for _, d := range []time.Duration{-time.Nanosecond, maxGroupCommitWait + time.Nanosecond} {
		o := DefaultStoreOptions()
		o.GroupCommitWait = d
		if err := o.Validate(); err == nil {
			t.Errorf("group commit wait %v accepted", d)
		}
	}
	o := DefaultStoreOptions()
	o.GroupCommitWait = 0
	if err := o.Validate(); err != nil {
		t.Errorf("0 (never wait) refused: %v", err)
	}
}
