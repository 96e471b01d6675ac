package fsm

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// reopenProbeEnv makes the test binary run reopenProbe: BenchmarkMetadataScale measures the
// memory of a fresh process that reopened the store, as a restarted node is.
const reopenProbeEnv = "CAIRN_FSM_REOPEN_PROBE"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashHelperEnv); dir != "" {
		if err := crashHelper(dir); err != nil {
			fmt.Fprintln(os.Stderr, "crash helper:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	if dir := os.Getenv(raftCrashHelperEnv); dir != "" {
		if err := raftCrashHelper(dir); err != nil {
			fmt.Fprintln(os.Stderr, "raft crash helper:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	if spec := os.Getenv(reopenProbeEnv); spec != "" {
		if err := reopenProbe(spec); err != nil {
			fmt.Fprintln(os.Stderr, "reopen probe:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// reopenProbe opens the store in dir (spec is "dir|secrets-file"), checks every token secret
// listed in secrets-file with TokenBySecret and reads its file, as requests would, and prints
// one line: "open=<seconds> heap=<bytes> rssanon=<bytes> rssfile=<bytes>".
func reopenProbe(spec string) error {
	dir, secretsPath, _ := strings.Cut(spec, "|")
	began := time.Now()
	f, err := New(dir, Options{})
	if err != nil {
		return err
	}
	defer f.Close()
	if _, ok := f.Config(); !ok {
		return fmt.Errorf("reopened store has no config")
	}
	opened := time.Since(began)
	in, err := os.Open(secretsPath)
	if err != nil {
		return err
	}
	defer in.Close()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		tok, ok := f.TokenBySecret(sc.Text())
		if !ok {
			return fmt.Errorf("secret %q unknown after reopen", sc.Text())
		}
		if _, ok := f.File(tok.FileID); !ok {
			return fmt.Errorf("file %s unknown after reopen", tok.FileID)
		}
	}
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	anon, file := procStatus("RssAnon:"), procStatus("RssFile:")
	fmt.Printf("open=%f heap=%d rssanon=%d rssfile=%d\n", opened.Seconds(), ms.HeapAlloc, anon, file)
	return sc.Err()
}

// procStatus reads a kB field of /proc/self/status in bytes (0 where there is none).
func procStatus(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
