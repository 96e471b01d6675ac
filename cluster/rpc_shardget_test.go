package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/erasure"
)

// rpcTestScriptedShards serves shard reads from a function, for streams that stall or break.
type rpcTestScriptedShards struct {
	rpcTestShards
	open func(off, n int64) io.Reader
}

func (s *rpcTestScriptedShards) OpenShard(_ context.Context, _ erasure.ShardID, off, n int64) (io.ReadCloser, error) {
	return withTestHeader(s.open(off, n)), nil
}

// TestShardGetReusesConnections: a read to its end hands its connection back for the next one;
// one closed early is not reused, and the next read still gets exactly its own bytes.
func TestShardGetReusesConnections(t *testing.T) {
	shards := newRPCTestShards()
	data := bytes.Repeat([]byte("0123456789"), 4000) // larger than the client's read buffer
	shards.data[rpcTestID] = data
	addr := rpcTestServe(t, shards, &rpcTestLeader{})
	nw := &rpcTestPoisonNet{}
	c := rpcTestClient(t, nw, muxTestSecret)
	ctx := rpcTestCtx(t)

	read := func(off, n int64, whole bool) {
		t.Helper()
		// Each read's context is cancelled before its body is closed, as core's stall guard
		// does: a body read to its end keeps its connection anyway.
		ctx, cancel := context.WithCancel(ctx)
		rc, err := c.OpenShard(ctx, addr, rpcTestID, off, n)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		defer cancel()
		if !whole {
			if _, err := io.ReadFull(rc, make([]byte, erasure.ShardHeaderLen+1)); err != nil {
				t.Fatal(err)
			}
			return
		}
		got, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(got, append(bytes.Clone(rpcTestHeader), data[off:off+n]...)) {
			t.Fatalf("read [%d,+%d): %d bytes, %v", off, n, len(got), err)
		}
	}
	for i := range 5 {
		read(int64(i), int64(len(data)-2*i), true)
	}
	if d := nw.dials.Load(); d != 1 {
		t.Fatalf("5 sequential reads dialled %d times, want 1", d)
	}
	read(0, int64(len(data)), false) // closed with most of its body unread
	read(3, 100, true)
	if d := nw.dials.Load(); d != 2 {
		t.Fatalf("dials = %d after a read closed early, want 2 (its connection is not reused)", d)
	}
}

// TestShardGetBrokenStream: a peer whose shard stream breaks after the headers went out aborts the
// answer, and the reader sees io.ErrUnexpectedEOF, never a short shard that ends cleanly.
func TestShardGetBrokenStream(t *testing.T) {
	shards := &rpcTestScriptedShards{open: func(_, _ int64) io.Reader {
		return io.MultiReader(bytes.NewReader(make([]byte, 64<<10)), &rpcTestBrokenReader{left: 0})
	}}
	addr := rpcTestServe(t, shards, &rpcTestLeader{})
	c := rpcTestClient(t, OSNetwork{}, muxTestSecret)
	rc, err := c.OpenShard(rpcTestCtx(t), addr, rpcTestID, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %d bytes, err = %v; want io.ErrUnexpectedEOF", n, err)
	}
}

// TestShardGetCancelUnblocksRead: cancelling the call's context ends a read blocked on a peer
// that stopped sending (core's stall guard relies on it), in the headers' wait and in the body.
func TestShardGetCancelUnblocksRead(t *testing.T) {
	release := make(chan struct{})
	shards := &rpcTestScriptedShards{open: func(_, n int64) io.Reader {
		return newRPCTestGatedReader(3, n, 1000, release) // 1000 bytes, then nothing until the end
	}}
	addr := rpcTestServe(t, shards, &rpcTestLeader{})
	t.Cleanup(func() { close(release) }) // before the server's shutdown, which waits for the handler
	c := rpcTestClient(t, OSNetwork{}, muxTestSecret)
	ctx, cancel := context.WithCancel(rpcTestCtx(t))
	rc, err := c.OpenShard(ctx, addr, rpcTestID, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, erasure.ShardHeaderLen+1000)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := rc.Read(make([]byte, 10))
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("blocked read after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled read stayed blocked")
	}

	// Cancelled before any answer: the open itself fails with the context's error.
	ctx, cancel = context.WithCancel(rpcTestCtx(t))
	cancel()
	if _, err := c.OpenShard(ctx, addr, rpcTestID, 0, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("open with a cancelled context: %v, want context.Canceled", err)
	}
}

// BenchmarkRPCOpenShard reads a 2 KiB shard (a 4 KiB file's, 2+1) through the lean shard-read
// client and, for comparison, through net/http's Transport as OpenShard did before
// (rpc_shardget.go). Client and server run in this process, so ns/op counts both ends.
func BenchmarkRPCOpenShard(b *testing.B) {
	shards := newRPCTestShards()
	shards.data[rpcTestID] = bytes.Repeat([]byte{7}, 2052)
	addr := rpcTestServe(b, shards, &rpcTestLeader{})
	c := rpcTestClient(b, OSNetwork{}, muxTestSecret)
	ctx := context.Background()
	buf := make([]byte, erasure.ShardHeaderLen+2052)
	read := func(b *testing.B, rc io.ReadCloser) {
		if _, err := io.ReadFull(rc, buf); err != nil {
			b.Fatal(err)
		}
		rc.Close()
	}
	b.Run("lean", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rc, err := c.OpenShard(ctx, addr, rpcTestID, 0, 2052)
			if err != nil {
				b.Fatal(err)
			}
			read(b, rc)
		}
	})
	b.Run("net/http", func(b *testing.B) {
		b.ReportAllocs()
		path := rpcShardPath(rpcTestID) + "?off=0&n=2052&" + rpcShardHeaderParam + "=1"
		for b.Loop() {
			resp, err := c.call(ctx, "GET", addr, path, nil, "", true)
			if err != nil {
				b.Fatal(err)
			}
			read(b, resp.Body)
		}
	})
}

func TestReadShardAnswerHead(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want shardAnswerHead
		bad  bool
	}{
		{"net/http's answer", "HTTP/1.1 200 OK\r\nContent-Length: 2148\r\nContent-Type: application/octet-stream\r\nDate: Wed, 02 Dec 2026 06:00:00 GMT\r\n\r\n", shardAnswerHead{status: 200, contentLength: 2148}, false},
		{"error answer", "HTTP/1.1 404 Not Found\r\ncontent-length: 40\r\n\r\n", shardAnswerHead{status: 404, contentLength: 40}, false},
		{"closing", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", shardAnswerHead{status: 200, contentLength: 1, close: true}, false},
		{"HTTP/1.0 is never reused", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", shardAnswerHead{status: 200, contentLength: 1, close: true}, false},
		{"chunked has no length", "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n", shardAnswerHead{status: 500, contentLength: -1}, false},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 3\n\n", shardAnswerHead{status: 200, contentLength: 3}, false},
		{"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 3\r\n\r\n", shardAnswerHead{status: 200, contentLength: 3}, false},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", shardAnswerHead{}, true},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", shardAnswerHead{}, true},
		{"long status", "HTTP/1.1 2000 OK\r\n\r\n", shardAnswerHead{}, true},
		{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", shardAnswerHead{}, true},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", shardAnswerHead{}, true},
		{"header without colon", "HTTP/1.1 200 OK\r\nContent-Length 1\r\n\r\n", shardAnswerHead{}, true},
		{"a CR is not a dash", "HTTP/1.1 200 OK\r\nContent\rLength: 5\r\n\r\n", shardAnswerHead{status: 200, contentLength: -1}, false},
		{"cut short", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", shardAnswerHead{}, true},
		{"too many headers", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", shardAnswerMaxHeaders+1) + "\r\n", shardAnswerHead{}, true},
		{"line longer than the buffer", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("y", shardGetReadBuffer) + "\r\n\r\n", shardAnswerHead{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readShardAnswerHead(bufio.NewReaderSize(strings.NewReader(tt.in), shardGetReadBuffer))
			if tt.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// FuzzReadShardAnswerHead: any bytes from a peer parse or fail without a panic, and an accepted
// length is never negative unless it means "none".
func FuzzReadShardAnswerHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2148\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		head, err := readShardAnswerHead(bufio.NewReaderSize(bytes.NewReader(in), 64))
		if err == nil && (head.contentLength < -1 || head.status < 0 || head.status > 999) {
			t.Fatalf("accepted %+v from %q", head, in)
		}
	})
}

// FuzzShardReadQuery: the in-place split gives what url.Values.Get gives, for any query.
func FuzzShardReadQuery(f *testing.F) {
	for _, q := range []string{"off=0&n=2052&h=1", "n=1&off=2", "off=1&off=2&n=3", "off&n=&h", "off=%31&n=1", "a=1;off=2", "off=1+2", "&&off=3&", "h=1&h=0"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u := &url.URL{RawQuery: raw}
		q := u.Query()
		want := shardReadParams{off: q.Get("off"), n: q.Get("n"), header: q.Get(rpcShardHeaderParam)}
		if got := shardReadQuery(u); got != want {
			t.Fatalf("query %q: got %+v, want %+v", raw, got, want)
		}
	})
}
