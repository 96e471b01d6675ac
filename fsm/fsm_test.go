package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// step is one log entry of an apply scenario.
type step struct {
	typ     CommandType
	req     string
	at      time.Duration // command time, as offset from t0
	payload any
	raw     []byte // applied verbatim instead of an encoded command
	want    error
	// replayOf, if > 0, is the 1-based step whose *Result this step must return unchanged.
	replayOf int
}

var initStep = step{typ: CmdInitCluster, req: "init", payload: initPayload()}

func TestApplyRules(t *testing.T) {
	ft := tok("TOKfull", "FIL1", AccessFull)
	rt := tok("TOKread", "FIL1", AccessRead)
	tests := []struct {
		name  string
		steps []step
		check func(t *testing.T, f *FSM)
	}{
		{
			name:  "init once",
			steps: []step{initStep, {typ: CmdInitCluster, req: "init2", payload: initPayload(), want: ErrAlreadyInitialized}},
			check: func(t *testing.T, f *FSM) {
				if c, ok := f.Config(); !ok || c.ClusterID != "c1" || c.Geometry != testGeometry {
					t.Errorf("Config() = %+v, %v", c, ok)
				}
				if k, ok := f.APIKeyBySecret("root-secret"); !ok || k.ID != "root" {
					t.Errorf("root key = %+v, %v", k, ok)
				}
				if _, ok := f.APIKeyBySecret("wrong"); ok {
					t.Error("wrong secret found an api key")
				}
			},
		},
		{
			name: "commands before init",
			steps: []step{
				{typ: CmdCreateFile, req: "r1", payload: fileCmd("FIL1"), want: ErrNotInitialized},
				{typ: CmdDeleteFile, req: "r2", payload: DeleteFile{FileID: "FIL1"}, want: ErrNotInitialized},
				{typ: CmdCreateToken, req: "r3", payload: CreateToken{Token: ft}, want: ErrNotInitialized},
				{typ: CmdDeleteToken, req: "r4", payload: DeleteToken{FileID: "FIL1", TokenID: "TOKfull"}, want: ErrNotInitialized},
			},
			check: func(t *testing.T, f *FSM) {
				if _, ok := f.Config(); ok {
					t.Error("Config() present before init")
				}
			},
		},
		{
			name: "create file and conflicts",
			steps: []step{
				initStep,
				{typ: CmdCreateFile, req: "r1", payload: fileCmd("FIL1", ft, rt)},
				{typ: CmdCreateFile, req: "r2", payload: fileCmd("FIL1", tok("TOKx", "FIL1", AccessFull)), want: ErrConflict},
				{typ: CmdCreateFile, req: "r3", payload: fileCmd("FIL2", tok("TOKfull", "FIL2", AccessFull)), want: ErrConflict},
				{typ: CmdCreateFile, req: "r4", payload: fileCmd("FIL2", Token{ID: "TOKy", Secret: ft.Secret, FileID: "FIL2", Access: AccessFull}), want: ErrConflict},
				{typ: CmdCreateFile, req: "r5", payload: fileCmd("FIL2", tok("TOKd", "FIL2", AccessFull), tok("TOKd", "FIL2", AccessRead)), want: ErrConflict},
				{typ: CmdCreateFile, req: "r6", payload: fileCmd("FIL2", tok("TOKe", "FIL2", AccessFull), Token{ID: "TOKf", Secret: "secret-TOKe", FileID: "FIL2", Access: AccessRead}), want: ErrConflict},
			},
			check: func(t *testing.T, f *FSM) {
				if got, ok := f.File("FIL1"); !ok || !reflect.DeepEqual(got, file("FIL1", 100)) {
					t.Errorf("File(FIL1) = %+v, %v", got, ok)
				}
				if _, ok := f.File("FIL2"); ok {
					t.Error("FIL2 exists after failed creates")
				}
				if got := f.FileTokens("FIL1"); !reflect.DeepEqual(got, []Token{ft, rt}) {
					t.Errorf("FileTokens = %+v", got)
				}
				if got, ok := f.TokenBySecret(ft.Secret); !ok || got != ft {
					t.Errorf("TokenBySecret = %+v, %v", got, ok)
				}
				if _, ok := f.TokenBySecret("secret-TOKe"); ok {
					t.Error("token of a refused create exists")
				}
				if files, tokens := f.Counts(); files != 1 || tokens != 2 {
					t.Errorf("Counts = %d, %d", files, tokens)
				}
			},
		},
		{
			name: "create file invalid",
			steps: []step{
				initStep,
				{raw: []byte(`{"v":1,"type":"createFile","requestId":"r1","time":"2026-01-02T03:04:05Z","payload":{"file":{"id":"FIL1"},"tokens":[]}}`), want: ErrInvalidCommand},
				{raw: []byte("not json"), want: ErrInvalidCommand},
				{raw: []byte(`{"v":2,"type":"deleteFile","requestId":"r2","time":"2026-01-02T03:04:05Z","payload":{"fileId":"FIL1"}}`), want: ErrInvalidCommand},
			},
			check: func(t *testing.T, f *FSM) {
				if files, tokens := f.Counts(); files != 0 || tokens != 0 {
					t.Errorf("Counts = %d, %d", files, tokens)
				}
			},
		},
		{
			name: "delete file removes its tokens",
			steps: []step{
				initStep,
				{typ: CmdCreateFile, req: "r1", payload: fileCmd("FIL1", ft, rt)},
				{typ: CmdCreateFile, req: "r2", payload: fileCmd("FIL2")},
				{typ: CmdDeleteFile, req: "r3", payload: DeleteFile{FileID: "FIL1"}},
				{typ: CmdDeleteFile, req: "r4", payload: DeleteFile{FileID: "FIL1"}, want: ErrNotFound},
			},
			check: func(t *testing.T, f *FSM) {
				for _, id := range []string{"TOKfull", "TOKread"} {
					if _, ok := f.Token(id); ok {
						t.Errorf("token %s survived its file", id)
					}
				}
				if files, tokens := f.Counts(); files != 1 || tokens != 1 {
					t.Errorf("Counts = %d, %d", files, tokens)
				}
			},
		},
		{
			name: "create token",
			steps: []step{
				initStep,
				{typ: CmdCreateFile, req: "r1", payload: fileCmd("FIL1", ft)},
				{typ: CmdCreateToken, req: "r2", payload: CreateToken{Token: rt}},
				{typ: CmdCreateToken, req: "r3", payload: CreateToken{Token: tok("TOKz", "FIL9", AccessRead)}, want: ErrNotFound},
				{typ: CmdCreateToken, req: "r4", payload: CreateToken{Token: Token{ID: "TOKread", Secret: "other", FileID: "FIL1", Access: AccessRead}}, want: ErrConflict},
				{typ: CmdCreateToken, req: "r5", payload: CreateToken{Token: Token{ID: "TOKnew", Secret: rt.Secret, FileID: "FIL1", Access: AccessRead}}, want: ErrConflict},
			},
			check: func(t *testing.T, f *FSM) {
				if got, ok := f.Token("TOKread"); !ok || got != rt {
					t.Errorf("Token(TOKread) = %+v, %v", got, ok)
				}
				if _, ok := f.Token("TOKnew"); ok {
					t.Error("conflicting token stored")
				}
			},
		},
		{
			name: "delete token rules",
			steps: []step{
				initStep,
				{typ: CmdCreateFile, req: "r1", payload: fileCmd("FIL1", ft, rt, tok("TOKfull2", "FIL1", AccessFull))},
				{typ: CmdCreateFile, req: "r2", payload: fileCmd("FIL2")},
				{typ: CmdDeleteToken, req: "r3", payload: DeleteToken{FileID: "FIL1", TokenID: "TOKmissing"}, want: ErrNotFound},
				{typ: CmdDeleteToken, req: "r4", payload: DeleteToken{FileID: "FIL2", TokenID: "TOKfull"}, want: ErrNotFound},
				{typ: CmdDeleteToken, req: "r5", payload: DeleteToken{FileID: "FIL1", TokenID: "TOKfull2"}},
				{typ: CmdDeleteToken, req: "r6", payload: DeleteToken{FileID: "FIL1", TokenID: "TOKfull"}, want: ErrLastFullToken},
				{typ: CmdDeleteToken, req: "r7", payload: DeleteToken{FileID: "FIL1", TokenID: "TOKread"}},
			},
			check: func(t *testing.T, f *FSM) {
				if got := f.FileTokens("FIL1"); len(got) != 1 || got[0].ID != "TOKfull" {
					t.Errorf("FileTokens = %+v", got)
				}
			},
		},
		{
			name: "expired full tokens do not count as remaining",
			steps: []step{
				initStep,
				{typ: CmdCreateFile, req: "r1", payload: fileCmd("FIL1", ft, expiring(tok("TOKold", "FIL1", AccessFull), t0.Add(time.Minute)))},
				{typ: CmdDeleteToken, req: "r2", at: time.Minute, payload: DeleteToken{FileID: "FIL1", TokenID: "TOKfull"}, want: ErrLastFullToken},
				{typ: CmdDeleteToken, req: "r3", at: time.Minute, payload: DeleteToken{FileID: "FIL1", TokenID: "TOKold"}},
			},
		},
		{
			name: "expired full token may be deleted though it is the only one",
			steps: []step{
				initStep,
				{typ: CmdCreateFile, req: "r1", payload: fileCmd("FIL1", expiring(ft, t0.Add(time.Second)))},
				{typ: CmdDeleteToken, req: "r2", at: time.Second, payload: DeleteToken{FileID: "FIL1", TokenID: "TOKfull"}},
			},
		},
		{
			name: "dedup returns the first result",
			steps: []step{
				initStep,
				{typ: CmdCreateFile, req: "r1", payload: fileCmd("FIL1", ft)},
				{typ: CmdCreateFile, req: "r1", at: time.Minute, payload: fileCmd("FIL1", ft), replayOf: 2},
				{typ: CmdDeleteToken, req: "r2", at: time.Minute, payload: DeleteToken{FileID: "FIL1", TokenID: "TOKfull"}, want: ErrLastFullToken},
				{typ: CmdCreateToken, req: "r3", at: time.Minute, payload: CreateToken{Token: tok("TOKfull2", "FIL1", AccessFull)}},
				// The state now allows the delete, but a retry must not change the answer.
				{typ: CmdDeleteToken, req: "r2", at: 2 * time.Minute, payload: DeleteToken{FileID: "FIL1", TokenID: "TOKfull"}, want: ErrLastFullToken, replayOf: 4},
				// Inside the window by the highest command time, even from a lagging clock.
				{typ: CmdCreateFile, req: "r1", at: -time.Hour, payload: fileCmd("FIL1", ft), replayOf: 2},
				{typ: CmdCreateFile, req: "r4", at: dedupWindow + time.Minute, payload: fileCmd("FIL4")},
				// r1 has aged out: it is applied afresh and now conflicts.
				{typ: CmdCreateFile, req: "r1", at: dedupWindow + time.Minute, payload: fileCmd("FIL1", ft), want: ErrConflict},
			},
			check: func(t *testing.T, f *FSM) {
				if got := f.FileTokens("FIL1"); len(got) != 2 {
					t.Errorf("FileTokens = %+v", got)
				}
			},
		},
		{
			name: "api keys: create, conflict, revoke, last admin key kept",
			steps: []step{
				initStep,
				{typ: CmdCreateAPIKey, req: "k1", payload: CreateAPIKey{Key: APIKey{ID: "u1", Hash: HashSecret("u1-secret"), Permissions: []string{"VIEW_FILES"}}}},
				{typ: CmdCreateAPIKey, req: "k2", payload: CreateAPIKey{Key: APIKey{ID: "u1", Hash: HashSecret("other")}}, want: ErrConflict},
				{typ: CmdCreateAPIKey, req: "k3", payload: CreateAPIKey{Key: APIKey{ID: "u2", Hash: HashSecret("u1-secret")}}, want: ErrConflict},
				{typ: CmdRevokeAPIKey, req: "k4", payload: RevokeAPIKey{ID: "nobody"}, want: ErrNotFound},
				{typ: CmdCreateAPIKey, req: "k5", payload: CreateAPIKey{Key: APIKey{ID: "admin", Hash: HashSecret("admin-secret"), Permissions: []string{PermManageAPIKeys}}}},
				{typ: CmdRevokeAPIKey, req: "k6", payload: RevokeAPIKey{ID: "admin"}, want: ErrLastAdminKey},
				{typ: CmdRevokeAPIKey, req: "k7", payload: RevokeAPIKey{ID: "u1"}},
			},
			check: func(t *testing.T, f *FSM) {
				if _, ok := f.APIKeyBySecret("u1-secret"); ok {
					t.Error("revoked key still authenticates")
				}
				if k, ok := f.APIKeyBySecret("admin-secret"); !ok || k.ID != "admin" {
					t.Error("admin key missing")
				}
				if got := f.APIKeys(); len(got) != 2 {
					t.Errorf("APIKeys = %+v", got)
				}
			},
		},
		{
			name: "settings and signing key rotation",
			steps: []step{
				initStep,
				{typ: CmdUpdateSettings, req: "s1", payload: UpdateSettings{Settings: ServiceSettings{DisableForceDownloadForMimeTypes: []string{"image/png"}, UpdatedAt: t0}}},
				{typ: CmdRotateSigningKey, req: "s2", payload: RotateSigningKey{Key: bytes.Repeat([]byte{7}, 32)}},
			},
			check: func(t *testing.T, f *FSM) {
				c, _ := f.Config()
				if len(c.Settings.DisableForceDownloadForMimeTypes) != 1 || !bytes.Equal(c.SigningKey, bytes.Repeat([]byte{7}, 32)) {
					t.Errorf("config = %+v", c)
				}
			},
		},
		{
			name: "moveShard is a compare-and-set on one slot; removeNode is recorded once",
			steps: []step{
				initStep,
				{typ: CmdCreateFile, req: "f1", payload: fileCmd("FIL1")},
				{typ: CmdMoveShard, req: "m1", payload: MoveShard{FileID: "FIL1", Segment: 0, Index: 1, From: "n2", To: "n9"}},
				{typ: CmdMoveShard, req: "m2", payload: MoveShard{FileID: "FIL1", Segment: 0, Index: 1, From: "n2", To: "n8"}, want: ErrConflict},
				// The same move proposed again (by a former leader's repair pass) is a no-op success.
				{typ: CmdMoveShard, req: "m2b", payload: MoveShard{FileID: "FIL1", Segment: 0, Index: 1, From: "n2", To: "n9"}},
				{typ: CmdMoveShard, req: "m3", payload: MoveShard{FileID: "FIL1", Segment: 3, Index: 1, From: "n2", To: "n8"}, want: ErrNotFound},
				{typ: CmdMoveShard, req: "m4", payload: MoveShard{FileID: "FIL9", Segment: 0, Index: 1, From: "n2", To: "n8"}, want: ErrNotFound},
				{typ: CmdRemoveNode, req: "r1", payload: RemoveNode{NodeID: "n3"}},
				{typ: CmdRemoveNode, req: "r2", payload: RemoveNode{NodeID: "n3"}},
			},
			check: func(t *testing.T, f *FSM) {
				file, _ := f.File("FIL1")
				if got := file.Layout.Segments[0].Nodes; got[1] != "n9" || got[0] != "n1" || got[2] != "n3" {
					t.Errorf("nodes after move = %v", got)
				}
				if c, _ := f.Config(); len(c.RemovedNodes) != 1 || c.RemovedNodes[0] != "n3" {
					t.Errorf("removed nodes = %v", c.RemovedNodes)
				}
			},
		},
		{
			name: "expire removes only what is expired at command time",
			steps: []step{
				initStep,
				{typ: CmdCreateFile, req: "f1", payload: func() CreateFile {
					c := fileCmd("FIL1", ft, expiring(rt, t0.Add(time.Hour)))
					c.File.ExpiresAt = t0.Add(2 * time.Hour)
					return c
				}()},
				{typ: CmdCreateFile, req: "f2", payload: fileCmd("FIL2")},
				{typ: CmdExpire, req: "e1", at: 90 * time.Minute, payload: Expire{FileIDs: []string{"FIL1", "FIL2", "nope"}, TokenIDs: []string{"TOKread", "TOKfull"}}},
			},
			check: func(t *testing.T, f *FSM) {
				if _, ok := f.Token("TOKread"); ok {
					t.Error("expired token survived")
				}
				if _, ok := f.Token("TOKfull"); !ok {
					t.Error("unexpired token removed")
				}
				if _, ok := f.File("FIL1"); !ok {
					t.Error("file removed before its expiry")
				}
				if _, ok := f.File("FIL2"); !ok {
					t.Error("file without expiry removed")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFSM(t)
			var results []*Result
			for i, s := range tt.steps {
				index := uint64(i + 1)
				data := s.raw
				if data == nil {
					data = mustEncode(t, s.typ, s.req, t0.Add(s.at), s.payload)
				}
				before := body(dump(t, f))
				res, ok := f.Apply(cmdLog(index, data)).(*Result)
				if !ok {
					t.Fatalf("step %d: Apply returned %T", i+1, res)
				}
				results = append(results, res)
				if !errors.Is(res.Err, s.want) || (s.want == nil && res.Err != nil) {
					t.Errorf("step %d: err = %v, want %v", i+1, res.Err, s.want)
				}
				if s.replayOf > 0 {
					if !reflect.DeepEqual(res, results[s.replayOf-1]) {
						t.Errorf("step %d: replay result %+v, first result %+v", i+1, res, results[s.replayOf-1])
					}
				} else if res.Index != index {
					t.Errorf("step %d: result index %d, want %d", i+1, res.Index, index)
				}
				if f.AppliedIndex() != index {
					t.Errorf("step %d: AppliedIndex %d", i+1, f.AppliedIndex())
				}
				if errors.Is(s.want, ErrInvalidCommand) && !bytes.Equal(before, body(dump(t, f))) {
					t.Errorf("step %d: invalid command changed state", i+1)
				}
			}
			if tt.check != nil {
				tt.check(t, f)
			}
		})
	}
}

func TestReadsReturnCopies(t *testing.T) {
	f := newTestFSM(t)
	f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
	f.Apply(cmdLog(2, mustEncode(t, CmdCreateFile, "r1", t0, fileCmd("FIL1"))))
	got, _ := f.File("FIL1")
	got.Tags[0] = "mutated"
	got.Layout.Segments[0].Nodes[0] = "mutated"
	cfg, _ := f.Config()
	cfg.SigningKey[0] = 'X'
	key, _ := f.APIKeyBySecret("root-secret")
	key.Permissions[0] = "mutated"
	f.Files(func(f File) bool { f.Tags[0] = "mutated"; return false })

	if again, _ := f.File("FIL1"); !reflect.DeepEqual(again, file("FIL1", 100)) {
		t.Errorf("stored file changed through a read: %+v", again)
	}
	if again, _ := f.Config(); !reflect.DeepEqual(again, initPayload().Config) {
		t.Errorf("stored config changed through a read: %+v", again)
	}
	if again, _ := f.APIKeyBySecret("root-secret"); !reflect.DeepEqual(again, initPayload().RootKey) {
		t.Errorf("stored key changed through a read: %+v", again)
	}
}

func TestFilesOrderAndStop(t *testing.T) {
	f := newTestFSM(t)
	f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
	for i, id := range []string{"FILc", "FILa", "FILb"} {
		f.Apply(cmdLog(uint64(i+2), mustEncode(t, CmdCreateFile, id, t0, fileCmd(id))))
	}
	tests := []struct {
		stopAfter int
		want      []string
	}{
		{stopAfter: 10, want: []string{"FILa", "FILb", "FILc"}},
		{stopAfter: 2, want: []string{"FILa", "FILb"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.stopAfter), func(t *testing.T) {
			var got []string
			f.Files(func(fl File) bool {
				got = append(got, fl.ID)
				return len(got) < tt.stopAfter
			})
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Files visited %v, want %v", got, tt.want)
			}
		})
	}
}

// TestApplyBatchEqualsApply feeds the same random log, with configuration entries mixed in, to
// one FSM entry by entry and to another in random batches.
func TestApplyBatchEqualsApply(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			g := newCommandGen(seed)
			var logs []*raft.Log
			for i := range 400 {
				l := cmdLog(uint64(i+1), g.next(t))
				if g.rng.IntN(20) == 0 {
					l.Type, l.Data = raft.LogConfiguration, []byte("config")
				}
				logs = append(logs, l)
			}
			single, batched := newTestFSM(t), newTestFSM(t)
			var want, got []any
			for _, l := range logs {
				want = append(want, single.Apply(l))
			}
			for rest := logs; len(rest) > 0; {
				n := min(1+g.rng.IntN(64), len(rest))
				got = append(got, batched.ApplyBatch(rest[:n])...)
				rest = rest[n:]
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatal("ApplyBatch results differ from Apply one by one")
			}
			if a, b := dump(t, single), dump(t, batched); !bytes.Equal(a, b) {
				t.Fatalf("final state differs:\nApply:      %s\nApplyBatch: %s", a, b)
			}
			if fl, _ := single.Counts(); fl == 0 {
				t.Error("random log created no files; the comparison proves little")
			}
		})
	}
}

func TestApplyBatchNonCommandEntries(t *testing.T) {
	f := newTestFSM(t)
	res := f.ApplyBatch([]*raft.Log{
		{Index: 7, Type: raft.LogConfiguration, Data: []byte("x")},
		cmdLog(8, mustEncode(t, CmdInitCluster, "init", t0, initPayload())),
		{Index: 9, Type: raft.LogConfiguration},
	})
	if res[0] != nil || res[2] != nil {
		t.Errorf("non-command results = %v, %v; want nil", res[0], res[2])
	}
	if r, ok := res[1].(*Result); !ok || r.Err != nil || r.Index != 8 {
		t.Errorf("command result = %+v", res[1])
	}
	if f.AppliedIndex() != 9 {
		t.Errorf("AppliedIndex = %d, want 9", f.AppliedIndex())
	}
	if got := f.ApplyBatch(nil); len(got) != 0 {
		t.Errorf("empty batch gave %v", got)
	}
}

func TestWaitApplied(t *testing.T) {
	tests := []struct {
		name    string
		wait    uint64
		ctx     func() (context.Context, context.CancelFunc)
		advance bool
		want    error
	}{
		{name: "already applied", wait: 1, ctx: background},
		{name: "wakes on apply", wait: 3, ctx: background, advance: true},
		{name: "cancelled", wait: 3, ctx: func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, want: context.Canceled},
		{name: "deadline", wait: 3, ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 10*time.Millisecond)
		}, want: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFSM(t)
			f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
			ctx, cancel := tt.ctx()
			t.Cleanup(cancel)
			const waiters = 50
			done := make(chan error, waiters)
			for range waiters {
				go func() { done <- f.WaitApplied(ctx, tt.wait) }()
			}
			if tt.advance {
				select {
				case err := <-done:
					t.Fatalf("WaitApplied returned %v before the index was applied", err)
				default:
				}
				f.Apply(&raft.Log{Index: 2, Type: raft.LogConfiguration})
				f.Apply(&raft.Log{Index: 3, Type: raft.LogConfiguration})
			}
			for range waiters {
				select {
				case err := <-done:
					if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
						t.Errorf("WaitApplied = %v, want %v", err, tt.want)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("WaitApplied did not return")
				}
			}
		})
	}
}

func background() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func TestErrorCodes(t *testing.T) {
	tests := []struct {
		err  error
		code string
	}{
		{nil, ""},
		{ErrNotFound, "not_found"},
		{ErrConflict, "conflict"},
		{ErrLastFullToken, "last_full_token"},
		{ErrAlreadyInitialized, "already_initialized"},
		{ErrNotInitialized, "not_initialized"},
		{ErrInvalidCommand, "invalid_command"},
		{fmt.Errorf("wrapped: %w", ErrConflict), "conflict"},
		{errors.New("disk on fire"), "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			if got := ErrorCode(tt.err); got != tt.code {
				t.Fatalf("ErrorCode(%v) = %q, want %q", tt.err, got, tt.code)
			}
			back := ErrorFromCode(tt.code)
			if tt.code != "internal" && !errors.Is(tt.err, back) && tt.err != nil {
				t.Errorf("ErrorFromCode(%q) = %v does not match %v", tt.code, back, tt.err)
			}
		})
	}
	for _, code := range []string{"internal", "from_the_future"} {
		err := ErrorFromCode(code)
		if err == nil || ErrorCode(err) != "internal" {
			t.Errorf("ErrorFromCode(%q) = %v, want a generic error", code, err)
		}
	}
}

func BenchmarkApplyBatch(b *testing.B) {
	f := newTestFSM(b)
	f.Apply(cmdLog(1, mustEncode(b, CmdInitCluster, "init", t0, initPayload())))
	const batch = 64
	index := uint64(1)
	logs := make([]*raft.Log, batch)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for j := range logs {
			index++
			id := fmt.Sprintf("FIL%d", index)
			logs[j] = cmdLog(index, mustEncode(b, CmdCreateFile, id, t0.Add(time.Duration(index)*time.Millisecond),
				fileCmd(id, tok("TOK"+id, id, AccessFull), tok("TOKr"+id, id, AccessRead))))
		}
		b.StartTimer()
		f.ApplyBatch(logs)
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkPointRead compares a token-by-secret lookup on a pebble snapshot (how every read ran
// before) with one on the latest state (lookup now), over 20k files, with apply running beside
// it as on a busy node: `go test -run '^$' -bench PointRead -benchmem ./fsm/`.
func BenchmarkPointRead(b *testing.B) {
	const files = 20000
	f := fsmWithFiles(b, files)
	secrets := make([]string, files)
	for i := range secrets {
		secrets[i] = tok(fmt.Sprintf("FIL%08d-full", i), "", AccessFull).Secret
	}
	if _, ok := f.TokenBySecret(secrets[files/2]); !ok {
		b.Fatal("a stored token is not found")
	}
	for _, mode := range []struct {
		name string
		read func(f *FSM, fn func(s store) error) error
	}{{"snapshot", (*FSM).view}, {"latest", (*FSM).viewLatest}} {
		b.Run(mode.name, func(b *testing.B) {
			stop := make(chan struct{})
			applied := make(chan struct{})
			go func() { // apply beside the reads, as raft's FSM goroutine does on a busy node
				defer close(applied)
				next := uint64(files + 2)
				for {
					select {
					case <-stop:
						return
					default:
					}
					batch := make([]*raft.Log, 16)
					for j := range batch {
						id := fmt.Sprintf("FILb%016d", next)
						batch[j] = cmdLog(next, mustEncode(b, CmdCreateFile, "r"+id, t0, fileCmd(id)))
						next++
					}
					f.ApplyBatch(batch)
				}
			}()
			defer func() { close(stop); <-applied }()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					secret := secrets[i%files]
					i += 7919
					var found bool
					_ = mode.read(f, func(s store) (err error) { _, found, err = s.tokenBySecret(secret); return err })
					if !found {
						b.Error("a stored token is not found")
						return
					}
				}
			})
		})
	}
}

// Config answers from the meta row of the last committed batch (stateDB.committed), not from the
// store. It must be the config the store holds: after each change, after a reopen, and after a
// Restore that replaces the store with another cluster's state.
func TestConfigIsTheCommittedOne(t *testing.T) {
	dir := t.TempDir()
	f := openFSM(t, dir)
	f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
	settings := ServiceSettings{DisableForceDownloadForMimeTypes: []string{"image/png", "text/*"}, UpdatedAt: t0.Add(time.Minute)}
	f.ApplyBatch([]*raft.Log{
		cmdLog(2, mustEncode(t, CmdUpdateSettings, "s1", t0, UpdateSettings{Settings: settings})),
		cmdLog(3, mustEncode(t, CmdRotateSigningKey, "k1", t0, RotateSigningKey{Key: bytes.Repeat([]byte{9}, 32)})),
		cmdLog(4, mustEncode(t, CmdRemoveNode, "n1", t0, RemoveNode{NodeID: "n3"})),
	})
	want := initPayload().Config
	want.Settings, want.SigningKey, want.RemovedNodes = settings, bytes.Repeat([]byte{9}, 32), []string{"n3"}
	if got, ok := f.Config(); !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("after the batch: Config() = %+v, %v; want %+v", got, ok, want)
	}
	// A refused command in the next batch changes nothing.
	again := initPayload()
	again.Config.ClusterID = "other"
	f.Apply(cmdLog(5, mustEncode(t, CmdInitCluster, "init-again", t0, again)))
	if got, _ := f.Config(); !reflect.DeepEqual(got, want) {
		t.Fatalf("a refused initCluster changed the config: %+v", got)
	}

	sink := persistedSnapshot(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := openFSM(t, dir)
	defer reopened.Close()
	if got, ok := reopened.Config(); !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("after a reopen: Config() = %+v, %v; want %+v", got, ok, want)
	}

	other := newTestFSM(t)
	otherInit := initPayload()
	otherInit.Config.ClusterID = "c2"
	other.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, otherInit)))
	if got, _ := other.Config(); got.ClusterID != "c2" {
		t.Fatalf("Config() = %+v before the restore", got)
	}
	if err := other.Restore(io.NopCloser(sink)); err != nil {
		t.Fatal(err)
	}
	if got, ok := other.Config(); !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("after a restore: Config() = %+v, %v; want %+v", got, ok, want)
	}
	// Apply goes on from the restored meta row, not the replaced one.
	other.Apply(cmdLog(6, mustEncode(t, CmdRemoveNode, "n2", t0, RemoveNode{NodeID: "n2"})))
	want.RemovedNodes = []string{"n2", "n3"}
	if got, _ := other.Config(); !reflect.DeepEqual(got, want) {
		t.Fatalf("apply after the restore: Config() = %+v; want %+v", got, want)
	}
	if got := other.AppliedIndex(); got != 6 {
		t.Fatalf("applied index %d after the restore and one entry, want 6", got)
	}
}

// APIKeyBySecret answers from a cache (stateDB.keys). A key must stop working the moment its
// revocation is applied, even while other readers are filling the cache, and a key created
// afterwards must be found; a Restore starts from the restored store's keys.
func TestAPIKeyCacheFollowsCreatesAndRevokes(t *testing.T) {
	f := newTestFSM(t)
	f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
	key := func(id string) APIKey {
		return APIKey{ID: id, Name: id, Hash: HashSecret(id + "-secret"), Permissions: []string{PermViewFiles}, CreatedAt: t0}
	}
	index := uint64(1)
	apply := func(typ CommandType, p any) {
		index++
		if r := f.Apply(cmdLog(index, mustEncode(t, typ, fmt.Sprintf("r%d", index), t0, p))).(*Result); r.Err != nil {
			t.Fatalf("apply %s: %v", typ, r.Err)
		}
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					f.APIKeyBySecret("k1-secret")
					f.APIKeyBySecret("root-secret")
				}
			}
		})
	}
	defer func() { close(stop); readers.Wait() }()

	for round := range 50 {
		apply(CmdCreateAPIKey, CreateAPIKey{Key: key("k1")})
		if got, ok := f.APIKeyBySecret("k1-secret"); !ok || !reflect.DeepEqual(got, key("k1")) {
			t.Fatalf("round %d: the key just created is %+v, %v", round, got, ok)
		}
		apply(CmdRevokeAPIKey, RevokeAPIKey{ID: "k1"})
		if got, ok := f.APIKeyBySecret("k1-secret"); ok {
			t.Fatalf("round %d: the key just revoked still authenticates: %+v", round, got)
		}
	}
	if _, ok := f.APIKeyBySecret("root-secret"); !ok {
		t.Fatal("the root key is lost")
	}
	// Unknown secrets, as an attacker sends them, are never cached.
	for i := range 10_000 {
		if _, ok := f.APIKeyBySecret(fmt.Sprintf("guess-%d", i)); ok {
			t.Fatal("an unknown secret authenticates")
		}
	}
	keys := &f.db.Load().keys
	keys.mu.Lock()
	cached := len(keys.byHash)
	keys.mu.Unlock()
	if cached > 2 {
		t.Fatalf("%d keys cached after 10,000 unknown secrets; only root and k1 exist", cached)
	}

	// A Restore to a state without the root key: the replaced generation's cache goes with it.
	other := newTestFSM(t)
	otherInit := initPayload()
	otherInit.RootKey = key("other-root")
	other.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, otherInit)))
	if err := f.Restore(io.NopCloser(persistedSnapshot(t, other))); err != nil {
		t.Fatal(err)
	}
	if got, ok := f.APIKeyBySecret("root-secret"); ok {
		t.Fatalf("a key of the replaced state authenticates after the restore: %+v", got)
	}
	if _, ok := f.APIKeyBySecret("other-root-secret"); !ok {
		t.Fatal("the restored state's key is unknown")
	}
}

// The key cache stays within its limit however many keys are looked up, and an answer
// read before an invalidation is not cached after it.
func TestAPIKeyCacheIsBounded(t *testing.T) {
	c := apiKeyCache{limit: maxKeyCacheBytes}
	for i := range 100_000 {
		id := fmt.Sprintf("key-%d", i)
		k := &APIKey{ID: id, Name: strings.Repeat("n", 200), Hash: HashSecret(id), Permissions: []string{PermViewFiles, PermManageAPIKeys}}
		_, version := c.get(k.Hash)
		c.put(k.Hash, k, version)
		if c.bytes > c.limit {
			t.Fatalf("after %d keys the cache holds %d bytes, over %d", i+1, c.bytes, c.limit)
		}
	}
	if len(c.byHash) == 0 || len(c.byHash) > c.limit/160 {
		t.Fatalf("the cache holds %d keys", len(c.byHash))
	}
	k := &APIKey{ID: "late", Hash: HashSecret("late")}
	_, version := c.get(k.Hash)
	c.invalidate()
	c.put(k.Hash, k, version)
	if got, _ := c.get(k.Hash); got != nil {
		t.Fatal("a key read before an invalidation was cached after it")
	}
}
