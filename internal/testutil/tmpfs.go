package testutil

import (
	"path/filepath"
	"syscall"
	"testing"
)

// MountTmpfs mounts a size-limited tmpfs (size as mount(8) takes it, e.g. "8m") at a fresh
// directory and unmounts it at cleanup, after whatever the test registers later (a cluster, a
// store) has stopped. It skips the test when mounting is not allowed (not root, or no tmpfs in
// this sandbox). Tests use it for real full-disk errors.
func MountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := syscall.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs (need root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
