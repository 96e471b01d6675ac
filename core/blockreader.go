package core

import (
	"errors"
	"io"

	"github.com/cairn-dev/cairn/erasure"
)

// blockReader reads the head of an upload body's blocks. It holds no buffer until the first byte
// arrives (a stalled upload costs none), then a small pooled one: a block that fits is read whole
// into it, and a longer block stops at the head, for the upload to read the rest straight into the
// shard streams' frames. So a 4 KiB file never costs a 1 MiB buffer, and a steady stream of
// uploads allocates no block buffers at all.
type blockReader struct {
	r     io.Reader
	codec *erasure.Codec
	buf   []byte // nil until the first byte; then a small buffer (a block buffer after gather)
}

// next returns the next block, or its head when the block is longer than the small buffer (more
// is then true and the rest is still in r), with nil; or the last (possibly empty) block and
// io.EOF once the body ended; or what it read and the body's error. The bytes are valid until
// the next call.
func (b *blockReader) next() (block []byte, more bool, err error) {
	blockSize := b.codec.BlockSize()
	if b.buf == nil {
		var first [1]byte
		if n, err := io.ReadFull(b.r, first[:]); n == 0 {
			if errors.Is(err, io.EOF) {
				return nil, false, io.EOF
			}
			return nil, false, err
		}
		b.buf = append(b.codec.SmallBuffer(), first[0])
	} else {
		b.buf = b.buf[:0]
	}
	n, err := io.ReadFull(b.r, b.buf[len(b.buf):min(cap(b.buf), blockSize)])
	b.buf = b.buf[:len(b.buf)+n]
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return b.buf, false, io.EOF
	case err != nil:
		return b.buf, false, err
	}
	return b.buf, len(b.buf) < blockSize, nil
}

// gather copies the first n data bytes of a block laid out as chunks of cl bytes (the data
// chunks of its frames) into the reader's buffer, which it grows to a block buffer if need be,
// and returns them: the last, short block of a body read straight into frames.
func (b *blockReader) gather(chunks [][]byte, cl, n int) []byte {
	if cap(b.buf) < n {
		b.release()
		b.buf = b.codec.BlockBuffer()
	}
	b.buf = b.buf[:0]
	for _, c := range chunks {
		b.buf = append(b.buf, c[:min(cl, n-len(b.buf))]...)
	}
	return b.buf
}

// release gives the buffer back to the codec's pools.
func (b *blockReader) release() {
	if b.buf != nil {
		b.codec.PutBuffer(b.buf)
		b.buf = nil
	}
}
