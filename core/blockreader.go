package core

import (
	"errors"
	"io"

	"github.com/cairn-dev/cairn/erasure"
)

// blockReader cuts an upload body into blocks of the codec's block size. It holds no buffer until
// the first byte arrives (a stalled upload costs none), then a small pooled one; only a body
// that outgrows it takes a pooled full block buffer. So a 4 KiB file never costs a 1 MiB buffer,
// and a steady stream of uploads allocates no block buffers at all.
type blockReader struct {
	r     io.Reader
	codec *erasure.Codec
	buf   []byte // nil until the first byte; then a small or a block buffer from codec's pools
}

// next returns the next block and nil, or the last (possibly empty) block and io.EOF once the
// body ended, or what it read and the body's error. The block is valid until the next call.
func (b *blockReader) next() ([]byte, error) {
	blockSize := b.codec.BlockSize()
	if b.buf == nil {
		var first [1]byte
		if n, err := io.ReadFull(b.r, first[:]); n == 0 {
			if errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			return nil, err
		}
		b.buf = append(b.codec.SmallBuffer(), first[0])
	} else {
		b.buf = b.buf[:0]
	}
	for len(b.buf) < blockSize {
		if len(b.buf) == cap(b.buf) { // outgrew the small buffer: move to a block buffer
			big := append(b.codec.BlockBuffer(), b.buf...)
			b.codec.PutBuffer(b.buf)
			b.buf = big
		}
		n, err := io.ReadFull(b.r, b.buf[len(b.buf):min(cap(b.buf), blockSize)])
		b.buf = b.buf[:len(b.buf)+n]
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return b.buf, io.EOF
		case err != nil:
			return b.buf, err
		}
	}
	return b.buf, nil
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
