package pace

import (
	"context"
	"io"

	"golang.org/x/time/rate"
)

// MaxChunk is the most bytes one Read or Write lets through at once, so that a large buffer
// waits for its tokens in steps instead of asking for more than the bucket ever holds.
const MaxChunk = 64 << 10

// Reader paces reads from r: every byte costs a token of limiter, and a read waits for its tokens
// until ctx ends.
type Reader struct {
	ctx     context.Context
	r       io.Reader
	limiter *rate.Limiter
}

// NewReader returns r paced by limiter.
func NewReader(ctx context.Context, r io.Reader, limiter *rate.Limiter) *Reader {
	return &Reader{ctx: ctx, r: r, limiter: limiter}
}

func (p *Reader) Read(b []byte) (int, error) {
	b = b[:min(len(b), p.limiter.Burst(), MaxChunk)]
	if err := p.limiter.WaitN(p.ctx, len(b)); err != nil {
		return 0, err
	}
	return p.r.Read(b)
}

// Writer paces writes to w the same way.
type Writer struct {
	ctx     context.Context
	w       io.Writer
	limiter *rate.Limiter
}

// NewWriter returns w paced by limiter.
func NewWriter(ctx context.Context, w io.Writer, limiter *rate.Limiter) *Writer {
	return &Writer{ctx: ctx, w: w, limiter: limiter}
}

func (p *Writer) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := min(len(b), p.limiter.Burst(), MaxChunk)
		if err := p.limiter.WaitN(p.ctx, n); err != nil {
			return written, err
		}
		m, err := p.w.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}
