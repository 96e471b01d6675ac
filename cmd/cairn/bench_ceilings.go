package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// ceilingWriteBytes is how much each sequential-write ceiling writes: enough to pass the
	// device's write cache warm-up, little enough for a shared machine.
	ceilingWriteBytes = 128 << 20
	// ceilingSyncWrites bounds the synchronous 4 KiB write ceiling (it also stops after 2 s).
	ceilingSyncWrites = 4000
	// directAlign is the buffer and offset alignment O_DIRECT asks for on every common device.
	directAlign = 4096
)

// benchCeilings are what this machine can do at best, measured in the same run as cairn.
type benchCeilings struct {
	directMiBps   float64 // sequential write with fsync through O_DIRECT (0 when refused)
	directErr     error
	bufferedMiBps float64 // the same through the page cache
	syncWritesPS  float64 // synchronous 4 KiB writes per second, one stream
	load          string
}

// measureCeilings measures the disk under dir.
func measureCeilings(dir string) (benchCeilings, error) {
	c := benchCeilings{load: loadAverage()}
	var err error
	c.directMiBps, c.directErr = seqWriteCeiling(dir, true)
	if c.bufferedMiBps, err = seqWriteCeiling(dir, false); err != nil {
		return c, err
	}
	if c.syncWritesPS, err = syncWriteCeiling(dir); err != nil {
		return c, err
	}
	return c, nil
}

func (c benchCeilings) print(w io.Writer) {
	fmt.Fprintf(w, "ceilings (load %s):\n", c.load)
	if c.directErr != nil {
		fmt.Fprintf(w, "  sequential write + fsync, O_DIRECT:   refused (%v)\n", c.directErr)
	} else {
		fmt.Fprintf(w, "  sequential write + fsync, O_DIRECT:   %.0f MiB/s\n", c.directMiBps)
	}
	fmt.Fprintf(w, "  sequential write + fsync, page cache: %.0f MiB/s\n", c.bufferedMiBps)
	fmt.Fprintf(w, "  synchronous 4 KiB writes, one stream: %.0f /s\n", c.syncWritesPS)
	fmt.Fprintf(w, "  a trivial Go file server on the same bytes: measured next to each GET\n\n")
}

// ratio names the ceiling a cairn figure is compared with and gives the ratio:
//   - PUT of 1 MiB or more: MiB/s against the O_DIRECT write ceiling divided by 1.5, the write
//     amplification of 2+1 (the page-cache one when O_DIRECT is refused);
//   - smaller PUTs: files/s against synchronous 4 KiB writes/s (each needs at least one);
//   - GET: against the file server on the same bytes and clients.
func (c benchCeilings) ratio(w benchWorkload, r, fileServer *benchResult) (string, string) {
	switch w.kind {
	case "put":
		if c.bufferedMiBps == 0 {
			return "-", "-"
		}
		if w.size >= 1<<20 {
			ceil, name := c.directMiBps, "O_DIRECT/1.5"
			if c.directErr != nil {
				ceil, name = c.bufferedMiBps, "page cache/1.5"
			}
			return name, fmt.Sprintf("%.2f", r.mibPerSec(w.size)/(ceil/1.5))
		}
		return "sync 4K writes", fmt.Sprintf("%.2f", r.opsPerSec()/c.syncWritesPS)
	case "get":
		if fileServer.opsPerSec() == 0 {
			return "-", "-"
		}
		return "file server", fmt.Sprintf("%.2f", r.opsPerSec()/fileServer.opsPerSec())
	}
	return "-", "-"
}

// alignedBuffer returns n bytes starting on a directAlign boundary.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	return b[off : off+n]
}

// seqWriteCeiling writes ceilingWriteBytes in 1 MiB writes and fsyncs, through O_DIRECT or the
// page cache, and reports MiB/s.
func seqWriteCeiling(dir string, direct bool) (float64, error) {
	path := filepath.Join(dir, fmt.Sprintf("ceiling-%d", time.Now().UnixNano()))
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	buf := alignedBuffer(1 << 20)
	for i := range buf {
		buf[i] = byte(i*7 + 3)
	}
	start := time.Now()
	for written := 0; written < ceilingWriteBytes; written += len(buf) {
		if _, err := f.Write(buf); err != nil {
			if direct && errors.Is(err, unix.EINVAL) {
				return 0, fmt.Errorf("the filesystem refuses O_DIRECT: %w", err)
			}
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return float64(ceilingWriteBytes) / (1 << 20) / time.Since(start).Seconds(), nil
}

// syncWriteCeiling appends 4 KiB at a time, each followed by fdatasync, for up to 2 s.
func syncWriteCeiling(dir string) (float64, error) {
	path := filepath.Join(dir, fmt.Sprintf("ceiling-sync-%d", time.Now().UnixNano()))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, 4096)
	start := time.Now()
	n := 0
	for ; n < ceilingSyncWrites && time.Since(start) < 2*time.Second; n++ {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
