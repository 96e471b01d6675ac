package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// runDebug implements `cairn debug`: one archive with what a bug report needs from every node, as
// `consul debug` does. Per node: status, the redacted configuration, metrics sampled every
// --interval for --duration, a CPU profile over the same time, and goroutine and heap profiles at
// the end. Profiles need the node to run with --enable-debug; what a node cannot give is noted in
// its errors.txt instead of failing the whole capture.
func runDebug(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newCommand("cairn debug", "", "Capture status, configuration (secrets redacted), metrics and profiles of every node into one\n"+
		".tar.gz (needs a key with MANAGE_CLUSTER; profiles need agents started with --enable-debug).", stderr)
	cf := addClientFlags(cmd.fs, "API key with MANAGE_CLUSTER")
	duration := cmd.fs.Duration("duration", 30*time.Second, "how long to sample metrics and the CPU profile")
	interval := cmd.fs.Duration("interval", 10*time.Second, "time between metrics samples")
	output := cmd.fs.String("output", "", "archive to write (default: cairn-debug-<UTC time>.tar.gz in this directory)")
	if _, err := cmd.parse(args, 0); err != nil {
		return err
	}
	if *duration <= 0 || *interval <= 0 || *interval > *duration {
		return cmd.usageErr("--duration and --interval must be positive, and --interval at most --duration")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if c.key == "" {
		return cmd.usageErr("--key (or CAIRN_KEY) with MANAGE_CLUSTER is required")
	}
	started := time.Now().UTC()
	if *output == "" {
		*output = "cairn-debug-" + started.Format("20060102T150405Z") + ".tar.gz"
	}
	views, err := collectViews(ctx, c, 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "capturing %s from %d nodes into %s\n", *duration, len(views), *output)

	arch := &debugArchive{}
	arch.addJSON("index.json", map[string]any{
		"capturedAt": started.Format(time.RFC3339), "duration": duration.String(), "interval": interval.String(),
		"cliVersion": version, "addr": c.base, "nodes": views,
	})
	var wg sync.WaitGroup
	for _, v := range views {
		nc := *c
		nc.base = v.Addr
		wg.Go(func() { captureNode(ctx, &nc, v, *duration, *interval, arch) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := arch.write(*output); err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, *output)
	return err
}

// captureNode gathers one node's part of the archive under its id.
func captureNode(ctx context.Context, c *apiClient, v nodeView, duration, interval time.Duration, arch *debugArchive) {
	dir := safeName(v.ID)
	var problems []string
	note := func(what string, err error) {
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound && strings.HasPrefix(what, "/debug/") {
			problems = append(problems, what+": not served; start the agent with --enable-debug")
			return
		}
		problems = append(problems, what+": "+err.Error())
	}
	if v.Error != "" {
		problems = append(problems, "/v1/status: "+v.Error)
	} else {
		arch.add(dir+"/status.json", v.Status)
	}
	get := func(path string, timeout time.Duration) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := c.newRequest(ctx, http.MethodGet, path, nil, true)
		if err != nil {
			return nil, err
		}
		resp, err := c.do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	}
	if b, err := get("/v1/config", 10*time.Second); err != nil {
		note("/v1/config", err)
	} else {
		arch.add(dir+"/config.json", b)
	}

	// The CPU profile runs while the metrics are sampled.
	var cpu sync.WaitGroup
	var cpuErr error
	cpu.Go(func() {
		secs := max(int(duration/time.Second), 1)
		b, err := get("/debug/pprof/profile?seconds="+strconv.Itoa(secs), duration+30*time.Second)
		if err != nil {
			cpuErr = err
			return
		}
		arch.add(dir+"/profile.prof", b)
	})
	// Samples at 0, interval, 2×interval, … up to duration.
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; i <= int(duration/interval); i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		if b, err := get("/metrics", 10*time.Second); err != nil {
			note("/metrics", err)
		} else {
			arch.add(fmt.Sprintf("%s/metrics-%02d.prom", dir, i), b)
		}
	}
	cpu.Wait()
	if cpuErr != nil {
		note("/debug/pprof/profile", cpuErr)
	}
	for _, p := range []struct{ path, file string }{
		{"/debug/pprof/goroutine?debug=2", "goroutine.txt"},
		{"/debug/pprof/heap", "heap.prof"},
	} {
		if b, err := get(p.path, 30*time.Second); err != nil {
			note(p.path, err)
		} else {
			arch.add(dir+"/"+p.file, b)
		}
	}
	if len(problems) > 0 {
		arch.add(dir+"/errors.txt", []byte(strings.Join(problems, "\n")+"\n"))
	}
}

// safeName keeps an archive path component to [A-Za-z0-9._-] (node ids already are).
func safeName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '.' || r == '_' || r == '-' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
			return r
		}
		return '_'
	}, s)
	if s == "" || s == "." || s == ".." {
		return "node"
	}
	return s
}

// debugArchive collects the files of the archive from several goroutines.
type debugArchive struct {
	mu    sync.Mutex
	files []archiveFile
}

type archiveFile struct {
	name string
	data []byte
}

func (a *debugArchive) add(name string, data []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.files = append(a.files, archiveFile{name, data})
}

func (a *debugArchive) addJSON(name string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b = []byte(err.Error())
	}
	a.add(name, append(b, '\n'))
}

// write stores the files as a gzipped tar under one top directory, through a temporary file so that
// a failed capture leaves no half archive.
func (a *debugArchive) write(file string) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".cairn-debug-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	top := strings.TrimSuffix(filepath.Base(file), ".tar.gz")
	gz := gzip.NewWriter(tmp)
	tw := tar.NewWriter(gz)
	now := time.Now()
	a.mu.Lock()
	files := a.files
	a.mu.Unlock()
	for _, f := range files {
		hdr := &tar.Header{Name: top + "/" + f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: now, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := errors.Join(tw.Close(), gz.Close(), tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return os.Rename(tmp.Name(), file)
}
