package main

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestE2EBench runs `cairn bench` briefly (its cluster in a child process, as always) and checks
// the table: every workload row accounts for every request it started, none failed, and the
// servers' CPU per operation was measured.
func TestE2EBench(t *testing.T) {
	if cairnBin == "" {
		t.Skip("-short: no binary built")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cairnBin, "bench", "--workloads", "put:4KiB:2,get:4KiB:2,put:300KiB:2",
		"--duration", "300ms", "--warmup", "0s", "--ceilings=false").CombinedOutput()
	if err != nil {
		t.Fatalf("cairn bench: %v\n%s", err, out)
	}
	rows := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 11 || (f[0] != "PUT" && f[0] != "GET") {
			continue
		}
		rows++
		// workload (2 fields), clients, started, ok, errors, ..., srv CPU/op at index 12
		started, _ := strconv.Atoi(f[4])
		ok, _ := strconv.Atoi(f[5])
		errs, _ := strconv.Atoi(f[6])
		if started == 0 || started != ok+errs || errs != 0 {
			t.Errorf("row %q: started %d, ok %d, errors %d", line, started, ok, errs)
		}
		if f[12] == "-" {
			t.Errorf("row %q: no server CPU per op", line)
		}
	}
	if rows != 3 {
		t.Fatalf("want 3 workload rows, got %d:\n%s", rows, out)
	}
}
