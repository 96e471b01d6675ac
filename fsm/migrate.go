package fsm

import (
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Format 1 of the store was one bbolt file, DATA_DIR/fsm/state.db, with a bucket per table and
// the same keys and values as format 2's tables. New migrates it: it copies every row into a new
// pebble generation (the applied index with them), makes it current, and only then removes
// state.db. A crash before the switch leaves state.db and no STORE, so the next start migrates
// again from scratch; a crash after it leaves STORE, and state.db is removed as a leftover.
var legacyBuckets = map[string]table{
	"meta": tableMeta, "files": tableFiles, "files-by-creation": tableFilesByCreate,
	"files-by-expiry": tableFilesByExpiry, "tokens": tableTokens, "token-by-secret": tableTokenBySecret,
	"tokens-by-file": tableTokensByFile, "tokens-by-expiry": tableTokensByExp, "apikeys": tableAPIKeys,
	"apikey-by-hash": tableAPIKeyByHash, "requests": tableRequests, "requests-by-time": tableRequestsByT,
}

const legacyStoreFormat = 1

// migrateRowsPerBatch bounds the rows one pebble batch of the migration holds.
const migrateRowsPerBatch = 20000

// migrateLegacy copies the bbolt store at path into db and returns its meta.
func migrateLegacy(path string, db *pebble.DB) (metaRow, error) {
	old, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return metaRow{}, fmt.Errorf("migrate state store %s: locked by another process (is another cairn agent using this data dir?)", path)
	}
	if err != nil {
		return metaRow{}, fmt.Errorf("migrate state store %s: %w", path, err)
	}
	defer old.Close()
	var m metaRow
	err = old.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("meta")); v == nil || u64(v.Get(metaFormat)) != legacyStoreFormat {
			return errors.New("not a format 1 store")
		}
		b := db.NewBatch()
		defer func() { _ = b.Close() }()
		n := 0
		err := tx.ForEach(func(name []byte, bucket *bolt.Bucket) error {
			t, ok := legacyBuckets[string(name)]
			if !ok {
				return fmt.Errorf("unknown bucket %q", name)
			}
			return bucket.ForEach(func(k, v []byte) error {
				if t == tableMeta && string(k) == string(metaFormat) {
					return nil // the new store has its own
				}
				if err := b.Set(t.key(k), v, nil); err != nil {
					return err
				}
				if n++; n%migrateRowsPerBatch == 0 {
					if err := b.Commit(pebble.NoSync); err != nil {
						return err
					}
					b.Reset()
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return err
		}
		m, err = (store{r: db}).meta()
		return err
	})
	if err != nil {
		return metaRow{}, fmt.Errorf("migrate state store %s: %w", path, err)
	}
	return m, nil
}
