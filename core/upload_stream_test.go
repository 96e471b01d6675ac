package core

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// TestShardBodyEndsCleanlyOnlyWhenClosed: a shard put's body hands out the queued frames in order
// and ends with io.EOF only when the segment closed the queue of a put that was not cancelled; a
// cancelled put (an aborted upload) ends with an error, so no node commits a partial shard. Both
// ways of consuming it (Read for a local put, WriteTo for the HTTP transport) behave alike.
func TestShardBodyEndsCleanlyOnlyWhenClosed(t *testing.T) {
	consume := map[string]func(*shardBody) ([]byte, error){
		"Read": func(b *shardBody) ([]byte, error) { return io.ReadAll(b) },
		"WriteTo": func(b *shardBody) ([]byte, error) {
			var out bytes.Buffer
			_, err := b.WriteTo(&out)
			return out.Bytes(), err
		},
	}
	for name, read := range consume {
		for _, cancelled := range []bool{false, true} {
			ctx, cancel := context.WithCancel(context.Background())
			st := &shardStream{queue: make(chan []byte, 2), free: make(chan []byte, 3), putDone: make(chan struct{}), dead: make(chan struct{})}
			body := &shardBody{st: st, ctx: ctx, stall: time.Minute, cancel: cancel}
			st.queue <- []byte("header")
			st.queue <- []byte("frame")
			if cancelled {
				cancel()
			}
			close(st.queue)
			got, err := read(body)
			switch {
			case cancelled && !errors.Is(err, context.Canceled):
				t.Errorf("%s of a cancelled put: %q, %v; want context.Canceled", name, got, err)
			case !cancelled && (err != nil || string(got) != "headerframe"):
				t.Errorf("%s of a closed put: %q, %v; want the frames and a clean end", name, got, err)
			}
			cancel()
		}
	}
}

// TestShardBodyStopsOnceThePutEnded: after the put returned (an early answer from the node), the
// body takes no more frames, and the ones it leaves are recycled by whoever drains the queue.
func TestShardBodyStopsOnceThePutEnded(t *testing.T) {
	st := &shardStream{queue: make(chan []byte, 2), free: make(chan []byte, 3), putDone: make(chan struct{}), dead: make(chan struct{})}
	body := &shardBody{st: st, ctx: context.Background(), stall: time.Minute, cancel: func() {}}
	st.queue <- []byte("frame")
	close(st.putDone)
	var out bytes.Buffer
	if _, err := body.WriteTo(&out); !errors.Is(err, errPutEnded) || out.Len() != 0 {
		t.Fatalf("WriteTo after the put ended wrote %q, %v; want nothing and errPutEnded", out.Bytes(), err)
	}
	if len(st.queue)+len(st.free) != 1 {
		t.Fatalf("the queued frame was lost: %d queued, %d free", len(st.queue), len(st.free))
	}
}
