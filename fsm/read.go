package fsm

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// A read that needs a consistent view of several rows (a file's tokens, a scan's chunk) runs on
// one pebble snapshot, a view of one applied index (a batch is committed atomically, so never
// half of one), concurrent with apply. Scans (Files, Tokens, FilesByCreation) read in chunks of
// scanChunk rows, each chunk on a snapshot of its own, so that no scan pins old versions for long:
// the view is consistent per chunk, not across chunks (DESIGN.md, "Reads"). A point lookup
// (lookup: a row by id, or an index entry and then the row it names) reads the latest state
// without a snapshot: each get sees whole batches only, and a later state between its two gets
// is an answer as right as the earlier one, since ids are never reused.

// scanChunk is how many rows one snapshot of a scan decodes.
const scanChunk = 1000

// view runs fn on a snapshot of the current store. Restore swaps the store; a reader that raced
// with the swap finds the old one closed and runs again on the new one.
func (f *FSM) view(fn func(s store) error) error { return f.read(true, fn) }

// viewLatest runs fn on the store's latest state, without a snapshot (opening and closing one is
// most of a point read's cost): for reads that stay right when a batch commits between their
// gets (see above).
func (f *FSM) viewLatest(fn func(s store) error) error { return f.read(false, fn) }

func (f *FSM) read(snapshot bool, fn func(s store) error) error {
	err := f.generation(func(h *stateDB) error {
		if !snapshot {
			return fn(store{r: h.db})
		}
		snap := h.db.NewSnapshot()
		return errors.Join(fn(store{r: snap}), snap.Close())
	})
	if err != nil {
		f.logger.Error("state store read failed", "err", err)
	}
	return err
}

// generation runs fn on the current store generation, held open while fn runs. Restore swaps the
// generation; a reader that raced with the swap finds the old one closed and runs again on the
// new one. After Close it is errStoreClosed.
func (f *FSM) generation(fn func(h *stateDB) error) error {
	for {
		h := f.db.Load()
		if !h.acquire() {
			if f.db.Load() != h {
				continue
			}
			return errStoreClosed
		}
		err := fn(h)
		h.release()
		return err
	}
}

// lookup reads one row through get, on the latest state (viewLatest): get is a row by its key,
// or an index entry and then the row it names. Read errors count as absent (they are logged).
func lookup[T any](f *FSM, get func(s store) (*T, bool, error)) (*T, bool) {
	var v *T
	var ok bool
	if err := f.viewLatest(func(s store) (err error) { v, ok, err = get(s); return err }); err != nil {
		return nil, false
	}
	return v, ok
}

// Config returns the cluster configuration, or false before initCluster has been applied. It is
// the decoded config of the last committed batch (stateDB.committed), so it reads nothing from
// the store; the caller gets its own copy.
func (f *FSM) Config() (ClusterConfig, bool) {
	var cfg *ClusterConfig
	if err := f.generation(func(h *stateDB) error { cfg = h.committed.Load().Config; return nil }); err != nil || cfg == nil {
		return ClusterConfig{}, false
	}
	return cfg.clone(), true
}

// File returns the file with the given id, expired or not.
func (f *FSM) File(id string) (File, bool) {
	file, ok := lookup(f, func(s store) (*File, bool, error) { return s.file(id) })
	if !ok {
		return File{}, false
	}
	return *file, true
}

// TokenBySecret returns the token whose secret is secret, expired or not. The lookup goes by the
// secret's hash and ends with a constant-time comparison of the secrets.
func (f *FSM) TokenBySecret(secret string) (Token, bool) {
	tok, ok := lookup(f, func(s store) (*Token, bool, error) { return s.tokenBySecret(secret) })
	if !ok || subtle.ConstantTimeCompare([]byte(tok.Secret), []byte(secret)) != 1 {
		return Token{}, false
	}
	return *tok, true
}

// Token returns the token with the given id, expired or not.
func (f *FSM) Token(id string) (Token, bool) {
	tok, ok := lookup(f, func(s store) (*Token, bool, error) { return s.token(id) })
	if !ok {
		return Token{}, false
	}
	return *tok, true
}

// FileTokens returns the file's tokens sorted by CreatedAt, then ID.
func (f *FSM) FileTokens(fileID string) []Token {
	var toks []Token
	if err := f.view(func(s store) (err error) { toks, err = s.fileTokens(fileID); return err }); err != nil {
		return nil
	}
	slices.SortFunc(toks, func(a, b Token) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return toks
}

// APIKeyBySecret returns the API key whose secret is secret, comparing hashes in constant time.
func (f *FSM) APIKeyBySecret(secret string) (APIKey, bool) {
	hash := HashSecret(secret)
	var key *APIKey
	if err := f.generation(func(h *stateDB) error {
		cached, version := h.keys.get(hash)
		if cached != nil {
			key = cached
			return nil
		}
		k, ok, err := store{r: h.db}.apiKeyByHash(hash)
		if err != nil || !ok {
			return err
		}
		h.keys.put(hash, k, version)
		key = k
		return nil
	}); err != nil {
		f.logger.Error("state store read failed", "err", err)
		return APIKey{}, false
	}
	if key == nil || subtle.ConstantTimeCompare([]byte(key.Hash), []byte(hash)) != 1 {
		return APIKey{}, false
	}
	out := *key
	out.Permissions = slices.Clone(key.Permissions)
	return out, true
}

// Files calls fn for every file in id order until fn returns false. It reads in chunks, each a
// consistent view of its own (a file created or deleted during the scan may or may not be seen);
// fn runs outside any snapshot, so it may call other FSM methods.
func (f *FSM) Files(fn func(File) bool) {
	scan(f, tableFiles, func(s store, k []byte) (*File, bool, error) { return s.file(string(k)) }, fn)
}

// FilesByCreation is Files in creation order (CreatedAt, then id), through the creation index.
func (f *FSM) FilesByCreation(fn func(File) bool) {
	scan(f, tableFilesByCreate, func(s store, k []byte) (*File, bool, error) {
		return s.file(string(k[encodedTimeLen:]))
	}, fn)
}

// Tokens calls fn for every persisted token in id order until fn returns false, in chunks as
// Files does.
func (f *FSM) Tokens(fn func(Token) bool) {
	scan(f, tableTokens, func(s store, k []byte) (*Token, bool, error) { return s.token(string(k)) }, fn)
}

// ExpiredFiles returns up to limit files whose expiry is at or before now, earliest expiry first,
// through the expiry index: it costs the rows returned, not the table.
func (f *FSM) ExpiredFiles(now time.Time, limit int) []File {
	return expired(f, tableFilesByExpiry, now, limit, func(s store, id string) (*File, bool, error) { return s.file(id) })
}

// ExpiredTokens returns up to limit tokens whose expiry is at or before now, earliest first.
func (f *FSM) ExpiredTokens(now time.Time, limit int) []Token {
	return expired(f, tableTokensByExp, now, limit, func(s store, id string) (*Token, bool, error) { return s.token(id) })
}

func expired[T any](f *FSM, index table, now time.Time, limit int, get func(s store, id string) (*T, bool, error)) []T {
	var out []T
	_ = f.view(func(s store) error {
		out = out[:0]
		end := encodeTime(now)
		return s.each(index, nil, func(k, _ []byte) (bool, error) {
			if len(out) >= limit || bytes.Compare(k[:encodedTimeLen], end) > 0 {
				return false, nil
			}
			v, ok, err := get(s, string(k[encodedTimeLen:]))
			if ok {
				out = append(out, *v)
			}
			return err == nil, err
		})
	})
	return out
}

// scan walks table t in key order, scanChunk keys per snapshot, resuming after the last key of
// the previous chunk, and calls fn outside the snapshots.
func scan[T any](f *FSM, t table, get func(s store, key []byte) (*T, bool, error), fn func(T) bool) {
	var after []byte
	for {
		var chunk []T
		more := false
		err := f.view(func(s store) error {
			chunk, more = chunk[:0], false
			var start []byte
			if after != nil {
				start = append(bytes.Clone(after), 0) // the smallest key after it
			}
			n := 0
			return s.each(t, start, func(k, _ []byte) (bool, error) {
				if n == scanChunk {
					more = true
					return false, nil
				}
				v, ok, err := get(s, k)
				if err != nil {
					return false, err
				}
				if ok {
					chunk = append(chunk, *v)
				}
				after = bytes.Clone(k)
				n++
				return true, nil
			})
		})
		if err != nil {
			return
		}
		for _, v := range chunk {
			if !fn(v) {
				return
			}
		}
		if !more {
			return
		}
	}
}

// Counts returns the number of files and tokens, from counters the store keeps: no scan.
func (f *FSM) Counts() (files, tokens int) {
	var m metaRow
	if err := f.view(func(s store) (err error) { m, err = s.meta(); return err }); err != nil {
		return 0, 0
	}
	return int(m.Files), int(m.Tokens)
}

// APIKeys returns every API key (hashes only), in id order.
func (f *FSM) APIKeys() []APIKey {
	var out []APIKey
	_ = f.view(func(s store) error {
		out = out[:0]
		return s.each(tableAPIKeys, nil, func(k, v []byte) (bool, error) {
			var key APIKey
			if err := json.Unmarshal(v, &key); err != nil {
				return false, fmt.Errorf("decode api key %q: %w", k, err)
			}
			out = append(out, key)
			return true, nil
		})
	})
	return out
}
