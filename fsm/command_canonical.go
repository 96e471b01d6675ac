package fsm

import (
	"bytes"
	"time"
	"unicode/utf8"

	"github.com/cairn-dev/cairn/erasure"
)

// canonicalVersion is the envelope version whose canonical form decodeCanonical reads. It must be
// CommandVersion and version 1's decoder must be decodeCurrentPayload (today's types, today's
// rules); TestCanonicalVersionIsCurrent fails when either stops being true, because the fast path
// decodes into today's types with today's validation.
const canonicalVersion = 1

// decodeCanonical is DecodeCommand's fast path. It reads only the exact byte form json.Marshal
// gives a command of the hot types (createFile, createToken, deleteFile, deleteToken, barrier,
// expire): the fields in declaration order, each once, under its exact name, no whitespace, no
// escapes in strings, integers without fraction or exponent, nothing after the envelope. Any
// byte it does not expect makes it give up (ok false), and the caller runs decodeCommandStrict.
//
// Why it is equivalent (fsm/DESIGN.md, "Decoding fast path"): an input it accepts is a JSON
// object whose keys are distinct and are exactly the struct's field names, so encoding/json with
// DisallowUnknownFields accepts it too and assigns each field from the same literal: a string
// without escapes that is valid UTF-8 decodes to its bytes; an integer of at most 18 digits is
// strconv.ParseInt's value; a time is (*time.Time).UnmarshalJSON of the same bytes, which is what
// encoding/json calls; null gives a nil slice and [] an empty non-nil one, as encoding/json does.
// The payload bytes are copied, as json.RawMessage copies them. The values then pass the same
// validate methods, and a value that fails them is handed to the strict path, so every error
// comes from there. FuzzDecodeCommandMatchesStrict checks this against decodeCommandStrict.
func decodeCanonical(b []byte) (Command, any, bool) {
	r := canonicalReader{b: b}
	var cmd Command
	r.lit(`{"v":`)
	cmd.Version = r.int()
	r.lit(`,"type":`)
	cmd.Type = r.commandType()
	r.lit(`,"requestId":`)
	cmd.RequestID = r.str()
	r.lit(`,"time":`)
	cmd.Time = r.time()
	r.lit(`,"payload":`)
	if r.bad || cmd.Version != canonicalVersion {
		return Command{}, nil, false
	}
	start := r.i
	var p payload
	switch cmd.Type {
	case CmdCreateFile:
		p = r.createFile()
	case CmdCreateToken:
		p = r.createToken()
	case CmdDeleteFile:
		v := new(DeleteFile)
		r.lit(`{"fileId":`)
		v.FileID = r.str()
		r.lit(`}`)
		p = v
	case CmdDeleteToken:
		v := new(DeleteToken)
		r.lit(`{"fileId":`)
		v.FileID = r.str()
		r.lit(`,"tokenId":`)
		v.TokenID = r.str()
		r.lit(`}`)
		p = v
	case CmdBarrier:
		v := new(Barrier)
		r.lit(`{"node":`)
		v.Node = r.str()
		r.lit(`}`)
		p = v
	case CmdExpire:
		p = r.expire()
	default:
		return Command{}, nil, false
	}
	end := r.i
	r.lit(`}`)
	if r.bad || r.i != len(b) {
		return Command{}, nil, false
	}
	if cmd.validate() != nil || p.validate() != nil {
		return Command{}, nil, false
	}
	cmd.Payload = bytes.Clone(b[start:end])
	return cmd, p, true
}

func (r *canonicalReader) createFile() *CreateFile {
	v := new(CreateFile)
	r.lit(`{"file":`)
	r.file(&v.File)
	r.lit(`,"tokens":`)
	if r.null() {
		r.lit(`}`)
		return v
	}
	r.lit(`[`)
	v.Tokens = []Token{}
	for !r.bad && !r.opt(`]`) {
		if len(v.Tokens) > 0 {
			r.lit(`,`)
		}
		v.Tokens = append(v.Tokens, Token{})
		r.token(&v.Tokens[len(v.Tokens)-1])
	}
	r.lit(`}`)
	return v
}

func (r *canonicalReader) file(f *File) {
	r.lit(`{"id":`)
	f.ID = r.str()
	r.lit(`,"name":`)
	f.Name = r.str()
	r.lit(`,"mimeType":`)
	f.MimeType = r.str()
	r.lit(`,"creatorId":`)
	f.CreatorID = r.str()
	r.lit(`,"createdByNode":`)
	f.CreatedBy = r.str()
	r.lit(`,"size":`)
	f.Size = r.int64()
	if r.opt(`,"tags":`) {
		f.Tags = r.strings()
	}
	if r.opt(`,"title":`) {
		f.Title = r.str()
	}
	if r.opt(`,"description":`) {
		f.Description = r.str()
	}
	if r.opt(`,"expiresAt":`) {
		f.ExpiresAt = r.time()
	}
	r.lit(`,"createdAt":`)
	f.CreatedAt = r.time()
	r.lit(`,"updatedAt":`)
	f.UpdatedAt = r.time()
	r.lit(`,"etag":`)
	f.ETag = r.str()
	r.lit(`,"layout":{"geometry":`)
	f.Layout.Geometry = r.geometry()
	r.lit(`,"blockSize":`)
	f.Layout.BlockSize = r.int()
	r.lit(`,"segments":`)
	if !r.null() {
		r.lit(`[`)
		f.Layout.Segments = []Segment{}
		for !r.bad && !r.opt(`]`) {
			if len(f.Layout.Segments) > 0 {
				r.lit(`,`)
			}
			var s Segment
			r.lit(`{"offset":`)
			s.Offset = r.int64()
			r.lit(`,"size":`)
			s.Size = r.int64()
			r.lit(`,"nodes":`)
			s.Nodes = r.strings()
			r.lit(`}`)
			f.Layout.Segments = append(f.Layout.Segments, s)
		}
	}
	r.lit(`}}`) // layout, file
}

func (r *canonicalReader) geometry() erasure.Geometry {
	var g erasure.Geometry
	r.lit(`{"data":`)
	g.Data = r.int()
	r.lit(`,"parity":`)
	g.Parity = r.int()
	r.lit(`}`)
	return g
}

func (r *canonicalReader) token(t *Token) {
	r.lit(`{"id":`)
	t.ID = r.str()
	r.lit(`,"secret":`)
	t.Secret = r.str()
	r.lit(`,"fileId":`)
	t.FileID = r.str()
	r.lit(`,"access":`)
	t.Access = r.access()
	r.lit(`,"creatorId":`)
	t.CreatorID = r.str()
	r.lit(`,"createdAt":`)
	t.CreatedAt = r.time()
	if r.opt(`,"expiresAt":`) {
		t.ExpiresAt = r.time()
	}
	if r.opt(`,"createdByNode":`) {
		t.CreatedBy = r.str()
	}
	r.lit(`}`)
}

func (r *canonicalReader) createToken() *CreateToken {
	v := new(CreateToken)
	r.lit(`{"token":`)
	r.token(&v.Token)
	if r.opt(`,"authority":{`) {
		a := new(TokenAuthority)
		if r.opt(`"apiKeyId":`) {
			a.APIKeyID = r.str()
			if r.opt(`,"tokenId":`) {
				a.TokenID = r.str()
			}
		} else if r.opt(`"tokenId":`) {
			a.TokenID = r.str()
		}
		r.lit(`}`)
		v.Authority = a
	}
	r.lit(`}`)
	return v
}

func (r *canonicalReader) expire() *Expire {
	v := new(Expire)
	r.lit(`{`)
	if r.opt(`"fileIds":`) {
		v.FileIDs = r.strings()
		if r.opt(`,"tokenIds":`) {
			v.TokenIDs = r.strings()
		}
	} else if r.opt(`"tokenIds":`) {
		v.TokenIDs = r.strings()
	}
	r.lit(`}`)
	return v
}

// canonicalReader reads the canonical form of a command. Every method does nothing once bad is
// set, so a decoder reads straight through and checks bad once at the end.
type canonicalReader struct {
	b   []byte
	i   int
	bad bool
}

// lit consumes exactly s.
func (r *canonicalReader) lit(s string) {
	if !r.opt(s) {
		r.bad = true
	}
}

// opt consumes s if the input continues with it.
func (r *canonicalReader) opt(s string) bool {
	if r.bad || len(r.b)-r.i < len(s) || string(r.b[r.i:r.i+len(s)]) != s {
		return false
	}
	r.i += len(s)
	return true
}

// null consumes a null literal.
func (r *canonicalReader) null() bool { return r.opt(`null`) }

// rawString consumes a string literal and returns its content. It gives up on any escape (the
// value would differ from the bytes), on a control character (invalid JSON) and on invalid UTF-8
// (which encoding/json replaces by U+FFFD).
func (r *canonicalReader) rawString() []byte {
	if r.bad || r.i >= len(r.b) || r.b[r.i] != '"' {
		r.bad = true
		return nil
	}
	start := r.i + 1
	ascii := true
	for j := start; j < len(r.b); j++ {
		switch c := r.b[j]; {
		case c == '"':
			s := r.b[start:j]
			if !ascii && !utf8.Valid(s) {
				r.bad = true
				return nil
			}
			r.i = j + 1
			return s
		case c == '\\' || c < 0x20:
			r.bad = true
			return nil
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	r.bad = true
	return nil
}

func (r *canonicalReader) str() string { return string(r.rawString()) }

// commandType and access return the constants for the values the fast path handles, which
// saves an allocation per field; any other value is returned as read (and the fast path then
// gives up on an unhandled type).
func (r *canonicalReader) commandType() CommandType {
	switch s := r.rawString(); CommandType(s) {
	case CmdCreateFile:
		return CmdCreateFile
	case CmdCreateToken:
		return CmdCreateToken
	case CmdDeleteFile:
		return CmdDeleteFile
	case CmdDeleteToken:
		return CmdDeleteToken
	case CmdBarrier:
		return CmdBarrier
	case CmdExpire:
		return CmdExpire
	default:
		return CommandType(s)
	}
}

func (r *canonicalReader) access() AccessLevel {
	switch s := r.rawString(); string(s) {
	case string(AccessFull):
		return AccessFull
	case string(AccessRead):
		return AccessRead
	default:
		return AccessLevel(s)
	}
}

// int64 consumes an integer: an optional minus, then 0 or up to 18 digits without a leading zero
// (so it cannot overflow). A fraction or an exponent is a float, which the strict path refuses
// for an integer field; the reader gives up on it.
func (r *canonicalReader) int64() int64 {
	if r.bad {
		return 0
	}
	j := r.i
	neg := j < len(r.b) && r.b[j] == '-'
	if neg {
		j++
	}
	start := j
	var n int64
	for ; j < len(r.b) && r.b[j] >= '0' && r.b[j] <= '9'; j++ {
		n = n*10 + int64(r.b[j]-'0')
	}
	digits := j - start
	if digits == 0 || digits > 18 || (digits > 1 && r.b[start] == '0') ||
		(j < len(r.b) && (r.b[j] == '.' || r.b[j] == 'e' || r.b[j] == 'E')) {
		r.bad = true
		return 0
	}
	r.i = j
	if neg {
		return -n
	}
	return n
}

// int is int64 for a Go int field, giving up where the value does not fit (32-bit platforms).
func (r *canonicalReader) int() int {
	n := r.int64()
	if int64(int(n)) != n {
		r.bad = true
		return 0
	}
	return int(n)
}

// time consumes a string literal and parses it with (*time.Time).UnmarshalJSON, as encoding/json
// does for a time.Time field.
func (r *canonicalReader) time() time.Time {
	start := r.i
	r.rawString()
	var t time.Time
	if r.bad || t.UnmarshalJSON(r.b[start:r.i]) != nil {
		r.bad = true
		return time.Time{}
	}
	return t
}

// strings consumes null (a nil slice) or an array of strings ([] is an empty, non-nil slice).
func (r *canonicalReader) strings() []string {
	if r.null() {
		return nil
	}
	r.lit(`[`)
	out := []string{}
	for !r.bad && !r.opt(`]`) {
		if len(out) > 0 {
			r.lit(`,`)
		}
		out = append(out, r.str())
	}
	if r.bad {
		return nil
	}
	return out
}
