package core

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/cairn-dev/cairn/erasure"
)

// stallReader blocks until release is closed, then serves r: an upload whose body has not
// started arriving.
type stallReader struct {
	release chan struct{}
	r       io.Reader
}

func (s *stallReader) Read(p []byte) (int, error) {
	<-s.release
	return s.r.Read(p)
}

// TestBlockReaderCutsBlocks: blocks that fit the small buffer come whole; a longer block comes as
// its head (more is true), the rest being read from the body by the caller, as an upload reads it
// into the frames. Either way the pieces add up to the body, and no buffer exceeds the small one.
func TestBlockReaderCutsBlocks(t *testing.T) {
	const blockSize = 1 << 17 // bigger than the small buffer
	c, err := erasure.NewCodec(erasure.Geometry{Data: 2, Parity: 1}, blockSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, 4096, 64<<10 - 1, 64 << 10, 64<<10 + 1, blockSize, blockSize + 1, 3*blockSize + 77} {
		for _, name := range []string{"whole reads", "one byte at a time"} {
			data := bytes.Repeat([]byte("cairn!"), size/6+1)[:size]
			var r io.Reader = bytes.NewReader(data)
			if name == "one byte at a time" {
				r = iotest.OneByteReader(r)
			}
			br := &blockReader{r: r, codec: c}
			var got []byte
			for {
				block, more, err := br.next()
				got = append(got, block...)
				if cap(block) > 64<<10 {
					t.Fatalf("size %d (%s): a %d-byte buffer", size, name, cap(block))
				}
				if more {
					if len(block) != 64<<10 || err != nil {
						t.Fatalf("size %d (%s): a head of %d bytes (%v)", size, name, len(block), err)
					}
					rest := make([]byte, blockSize-len(block))
					n, rerr := io.ReadFull(br.r, rest)
					got = append(got, rest[:n]...)
					if rerr != nil { // the body ended inside the block
						break
					}
					continue
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Fatalf("size %d (%s): a whole block of %d bytes from a body of longer blocks", size, name, len(block))
			}
			br.release()
			if !bytes.Equal(got, data) {
				t.Fatalf("size %d (%s): blocks do not add up to the body", size, name)
			}
		}
	}
}

// TestBlockReaderHoldsNothingUntilData: a body that has not sent a byte costs no buffer.
func TestBlockReaderHoldsNothingUntilData(t *testing.T) {
	c, err := erasure.NewCodec(erasure.Geometry{Data: 2, Parity: 1}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	sr := &stallReader{release: make(chan struct{}), r: bytes.NewReader([]byte("late"))}
	br := &blockReader{r: sr, codec: c}
	done := make(chan []byte)
	go func() {
		b, _, _ := br.next()
		done <- b
	}()
	// The reader is blocked inside next waiting for the first byte; the buffer is still nil.
	// (Reading br.buf here would race; the check is that next returns a small buffer.)
	close(sr.release)
	b := <-done
	if string(b) != "late" || cap(b) > 64<<10 {
		t.Fatalf("got %q in a %d-byte buffer", b, cap(b))
	}
	br.release()
}
