package core_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/internal/coretest"
)

// TestCurrentSettingsCacheNeverStale: CurrentSettings keeps the decoded settings per applied
// index. Readers hammering it while the settings change, and while other commands (uploads)
// move the index, never get a result older than the last change that returned before they
// asked, and never share a slice the cache holds (go test -race).
func TestCurrentSettingsCacheNeverStale(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	var mu sync.Mutex
	latest := 0 // generation of the last UpdateSettings that returned
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				want := latest
				mu.Unlock()
				got := h.Service.CurrentSettings()
				gen := generationOf(got)
				if gen < want {
					errs <- fmt.Errorf("CurrentSettings is generation %d after generation %d returned", gen, want)
					return
				}
				got.DisableForceDownloadForMimeTypes = append(got.DisableForceDownloadForMimeTypes[:0], "x/scribbled")
			}
		})
	}
	for gen := 1; gen <= 30; gen++ {
		types := []string{fmt.Sprintf("image/gen%d", gen)}
		if _, err := h.Service.UpdateSettings(ctx, h.Root, core.SettingsPatch{DisableForceDownloadForMimeTypes: &types}); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		latest = gen
		mu.Unlock()
		if got := h.Service.CurrentSettings(); !slices.Equal(got.DisableForceDownloadForMimeTypes, types) {
			t.Fatalf("right after update %d: %v", gen, got.DisableForceDownloadForMimeTypes)
		}
		if gen%5 == 0 { // another command moves the applied index without changing the settings
			if _, _, err := h.Upload(ctx, h.Root, core.FileAttrs{Name: "f"}, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func generationOf(s core.Settings) int {
	gen := 0
	for _, mt := range s.DisableForceDownloadForMimeTypes {
		fmt.Sscanf(mt, "image/gen%d", &gen)
	}
	return gen
}
