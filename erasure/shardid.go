package erasure

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxFileIDLen bounds the file-id part of a shard id; it is also a path component on disk.
const maxFileIDLen = 64

// maxShardNumber is the highest segment and shard index a shard id may name: volume records,
// index files and checksum seeds hold both in 4 bytes, so a larger one would alias another
// shard's place (segment 2^32 is segment 0).
const maxShardNumber = 1<<32 - 1

// ErrInvalidShardID reports a shard id that is malformed or could escape the store's directory.
var ErrInvalidShardID = errors.New("invalid shard id")

// ShardID names one shard: shard Index of segment Segment of file File.
type ShardID struct {
	File    string
	Segment int
	Index   int
}

// String returns "<file>.<segment>.<index>", e.g. "FILabc.0.2", which is also the shard's file
// name on disk.
func (id ShardID) String() string {
	return id.File + "." + strconv.Itoa(id.Segment) + "." + strconv.Itoa(id.Index)
}

// ParseShardID parses the String form strictly: the file id is 1 to 64 ASCII letters and digits,
// and both numbers are canonical non-negative decimals (no sign, no leading zeros), so that every
// accepted id round-trips through String and cannot name a path outside the store.
func ParseShardID(s string) (ShardID, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return ShardID{}, fmt.Errorf("%w: %q: want <file>.<segment>.<index>", ErrInvalidShardID, s)
	}
	seg, err := parseIndex(parts[1])
	if err != nil {
		return ShardID{}, fmt.Errorf("%w: %q: segment: %v", ErrInvalidShardID, s, err)
	}
	idx, err := parseIndex(parts[2])
	if err != nil {
		return ShardID{}, fmt.Errorf("%w: %q: index: %v", ErrInvalidShardID, s, err)
	}
	id := ShardID{File: parts[0], Segment: seg, Index: idx}
	if err := id.validate(); err != nil {
		return ShardID{}, err
	}
	return id, nil
}

// parseIndex accepts canonical non-negative decimals only.
func parseIndex(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", s)
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%q is not a non-negative decimal", s)
		}
	}
	return strconv.Atoi(s) // fails only on overflow
}

// validate guards every store path built from an id, including ids built in code rather than parsed.
func (id ShardID) validate() error {
	if id.File == "" || len(id.File) > maxFileIDLen {
		return fmt.Errorf("%w: file id %q: want 1 to %d characters", ErrInvalidShardID, id.File, maxFileIDLen)
	}
	if !isAlnum(id.File) {
		return fmt.Errorf("%w: file id %q: only letters and digits allowed", ErrInvalidShardID, id.File)
	}
	if id.Segment < 0 || id.Index < 0 {
		return fmt.Errorf("%w: %s: negative segment or index", ErrInvalidShardID, id)
	}
	if uint64(id.Segment) > maxShardNumber || uint64(id.Index) > maxShardNumber {
		return fmt.Errorf("%w: %s: segment or index above %d", ErrInvalidShardID, id, uint64(maxShardNumber))
	}
	return nil
}

// validateNew is validate for a shard about to be written: its index must also be below k+m's
// bound, since the shard header holds the index in 2 bytes. Shards stored before this bound was
// checked (only a peer's bad request could make one) stay readable and deletable.
func (id ShardID) validateNew() error {
	if err := id.validate(); err != nil {
		return err
	}
	if id.Index >= maxTotalShards {
		return fmt.Errorf("%w: %s: index above %d", ErrInvalidShardID, id, maxTotalShards-1)
	}
	return nil
}

// isAlnum reports whether s holds only ASCII letters and digits, the characters of a file id.
func isAlnum(s string) bool {
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}
