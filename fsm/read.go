package fsm

import (
	"crypto/subtle"
	"slices"
	"strings"

	memdb "github.com/hashicorp/go-memdb"
)

// Every read runs in one memdb read transaction, a consistent view of one applied index, and
// returns deep copies so that callers can never modify stored rows.

func (f *FSM) read() *memdb.Txn { return f.db.Load().Txn(false) }

// Config returns the cluster configuration, or false before initCluster has been applied.
func (f *FSM) Config() (ClusterConfig, bool) {
	m := loadMeta(f.read())
	if m.Config == nil {
		return ClusterConfig{}, false
	}
	return m.Config.clone(), true
}

// File returns the file with the given id, expired or not.
func (f *FSM) File(id string) (File, bool) {
	file, ok := first[File](f.read(), tableFiles, "id", id)
	if !ok {
		return File{}, false
	}
	return file.clone(), true
}

// TokenBySecret returns the token whose secret is secret, expired or not. The lookup goes by the
// secret's hash and ends with a constant-time comparison of the secrets.
func (f *FSM) TokenBySecret(secret string) (Token, bool) {
	tok, ok := first[Token](f.read(), tableTokens, "secret", HashSecret(secret))
	if !ok || subtle.ConstantTimeCompare([]byte(tok.Secret), []byte(secret)) != 1 {
		return Token{}, false
	}
	return *tok, true
}

// Token returns the token with the given id, expired or not.
func (f *FSM) Token(id string) (Token, bool) {
	tok, ok := first[Token](f.read(), tableTokens, "id", id)
	if !ok {
		return Token{}, false
	}
	return *tok, true
}

// FileTokens returns the file's tokens sorted by CreatedAt, then ID.
func (f *FSM) FileTokens(fileID string) []Token {
	var toks []Token
	if it, err := f.read().Get(tableTokens, "file", fileID); err == nil {
		for obj := it.Next(); obj != nil; obj = it.Next() {
			toks = append(toks, *obj.(*Token))
		}
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
	h := HashSecret(secret)
	key, ok := first[APIKey](f.read(), tableAPIKeys, "hash", h)
	if !ok || subtle.ConstantTimeCompare([]byte(key.Hash), []byte(h)) != 1 {
		return APIKey{}, false
	}
	return key.clone(), true
}

// Files calls fn for every file in id order until fn returns false. It iterates one consistent
// view, so fn may call other FSM methods but sees later changes only through them.
func (f *FSM) Files(fn func(File) bool) {
	it, err := f.read().Get(tableFiles, "id")
	if err != nil {
		return
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if !fn(obj.(*File).clone()) {
			return
		}
	}
}

// Counts returns the number of files and tokens. It walks both tables, so it suits status pages
// and metrics scrapes, not request paths.
func (f *FSM) Counts() (files, tokens int) {
	txn := f.read()
	return count(txn, tableFiles), count(txn, tableTokens)
}

func count(txn *memdb.Txn, table string) int {
	it, err := txn.Get(table, "id")
	if err != nil {
		return 0
	}
	n := 0
	for obj := it.Next(); obj != nil; obj = it.Next() {
		n++
	}
	return n
}

// Tokens calls fn for every persisted token in id order until fn returns false, over one
// consistent view.
func (f *FSM) Tokens(fn func(Token) bool) {
	it, err := f.read().Get(tableTokens, "id")
	if err != nil {
		return
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if !fn(*obj.(*Token)) {
			return
		}
	}
}

// APIKeys returns every API key (hashes only), in id order.
func (f *FSM) APIKeys() []APIKey {
	it, err := f.read().Get(tableAPIKeys, "id")
	if err != nil {
		return nil
	}
	var out []APIKey
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(*APIKey).clone())
	}
	return out
}
