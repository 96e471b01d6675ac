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

func TestBlockReaderCutsBlocks(t *testing.T) {
	const blockSize = 1 << 17 // bigger than the small buffer, so bodies move from one to the other
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
			var caps []int
			for {
				block, err := br.next()
				got = append(got, block...)
				caps = append(caps, cap(block))
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(block) != blockSize {
					t.Fatalf("size %d (%s): a block of %d bytes before the end", size, name, len(block))
				}
			}
			br.release()
			if !bytes.Equal(got, data) {
				t.Fatalf("size %d (%s): blocks do not add up to the body", size, name)
			}
			if size > 0 && size < 64<<10 && caps[0] > 64<<10 { // a body that fills the small buffer exactly moves on
				t.Fatalf("size %d (%s): a %d-byte buffer for a small body", size, name, caps[0])
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
		b, _ := br.next()
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
