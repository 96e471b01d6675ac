package httpapi

import (
	"context"
	"slices"

	"github.com/cairn-dev/cairn/core"
)

// The settings and listing part of fakeFiles, with the permission rules of core.

func (f *fakeFiles) Settings(_ context.Context, p core.Principal) (core.Settings, error) {
	if !p.Has(core.PermViewFileServiceSettings) {
		return core.Settings{}, core.ErrPermissionDenied
	}
	return f.CurrentSettings(), nil
}

func (f *fakeFiles) UpdateSettings(_ context.Context, p core.Principal, patch core.SettingsPatch) (core.Settings, error) {
	if !p.Has(core.PermUpdateFileServiceSettings) {
		return core.Settings{}, core.ErrPermissionDenied
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if patch.DisableForceDownloadForMimeTypes != nil {
		f.settings.DisableForceDownloadForMimeTypes = slices.Clone(*patch.DisableForceDownloadForMimeTypes)
	}
	f.settings.UpdatedAt = f.now
	return f.settings, nil
}

func (f *fakeFiles) CurrentSettings() core.Settings {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.settings
}

func (f *fakeFiles) ListFilesWithTokens(_ context.Context, p core.Principal) ([]core.FileListing, error) {
	if !p.Has(core.PermViewFiles) {
		return nil, core.ErrPermissionDenied
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []core.FileListing
	for id, file := range f.files {
		out = append(out, core.FileListing{File: file.info, Tokens: f.fileTokens(id)})
	}
	slices.SortFunc(out, func(a, b core.FileListing) int {
		switch {
		case a.File.ID < b.File.ID:
			return -1
		case a.File.ID > b.File.ID:
			return 1
		}
		return 0
	})
	return out, nil
}
