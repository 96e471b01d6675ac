package testcluster

import (
	"crypto/sha256"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// chaosOpKind is one public-API operation of the chaos workload.
type chaosOpKind uint8

const (
	chaosUpload chaosOpKind = iota
	chaosRead
	chaosDelete
	chaosCreateToken
	chaosDeleteToken
)

func (k chaosOpKind) String() string {
	return [...]string{"upload", "read", "delete", "createToken", "deleteToken"}[k]
}

// chaosResult is what a client learnt from an answer.
type chaosResult uint8

const (
	chaosOK      chaosResult = iota // 200
	chaosInvalid                    // 400 INVALID_TOKEN (2605): a definite refusal, nothing changed
	chaosUnknown                    // transport error, timeout or 5xx: it may or may not have happened
)

func (r chaosResult) String() string { return [...]string{"ok", "invalid", "unknown"}[r] }

// chaosFullToken is the model's name for the full token an upload returns. Read tokens are named
// "r1", "r2", ... by the worker that created them, since their secrets are not known in advance.
const chaosFullToken = "full"

// chaosInput is an operation on one file. File is the partition key. Token names the token
// presented; Target names the token created or deleted. Content identifies the bytes of an upload.
type chaosInput struct {
	Kind    chaosOpKind
	File    string
	Token   string
	Target  string
	Content string
	Node    int
}

// chaosOutput is an operation's outcome; Content identifies the bytes an ok read returned.
type chaosOutput struct {
	Result  chaosResult
	Content string
}

// chaosState is one file as the clients must see it. Tokens is the sorted, comma-separated set of
// live token names: a string keeps the state comparable with ==, so porcupine's default Equal works
// and Step can never mutate a state it was given.
type chaosState struct {
	Exists  bool
	Content string
	Tokens  string
}

func (s chaosState) names() []string {
	return slices.DeleteFunc(strings.Split(s.Tokens, ","), func(n string) bool { return n == "" })
}

func (s chaosState) has(name string) bool {
	return s.Exists && name != "" && slices.Contains(s.names(), name)
}

func (s chaosState) with(name string) chaosState {
	names := append(s.names(), name)
	slices.Sort(names)
	s.Tokens = strings.Join(slices.Compact(names), ",")
	return s
}

func (s chaosState) without(name string) chaosState {
	s.Tokens = strings.Join(slices.DeleteFunc(s.names(), func(n string) bool { return n == name }), ",")
	return s
}

// chaosStep is the sequential specification of one file. An operation whose outcome is unknown has
// an infinite return time, so porcupine may place it anywhere after its call, including after
// everything else: "it took effect here" and "it never took effect" are then both the one
// deterministic rule "apply the effect if its precondition holds where it is placed".
func chaosStep(s chaosState, in chaosInput, out chaosOutput) (bool, chaosState) {
	switch in.Kind {
	case chaosUpload:
		if s.Exists { // every upload creates a fresh file key
			return false, s
		}
		if out.Result == chaosInvalid {
			return true, s
		}
		return true, chaosState{Exists: true, Content: in.Content, Tokens: chaosFullToken}
	case chaosRead:
		valid := s.has(in.Token)
		switch out.Result {
		case chaosOK:
			return valid && out.Content == s.Content, s
		case chaosInvalid:
			return !valid, s
		}
		return true, s
	case chaosDelete:
		valid := s.has(in.Token)
		switch out.Result {
		case chaosOK:
			return valid, chaosState{}
		case chaosInvalid:
			return !valid, s
		}
		if valid {
			return true, chaosState{}
		}
		return true, s
	case chaosCreateToken:
		valid := s.has(in.Token)
		switch out.Result {
		case chaosOK:
			return valid, s.with(in.Target)
		case chaosInvalid:
			return !valid, s
		}
		return true, s // its secret was never learnt, so nobody can present it
	case chaosDeleteToken:
		valid := s.has(in.Token) && s.has(in.Target)
		switch out.Result {
		case chaosOK:
			return valid, s.without(in.Target)
		case chaosInvalid:
			return !valid, s
		}
		if valid {
			return true, s.without(in.Target)
		}
		return true, s
	}
	return false, s
}

// chaosModel checks a chaos history file by file: operations on different files never constrain
// each other, and per-file partitions keep the search small.
func chaosModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			var keys []string
			byFile := map[string][]porcupine.Operation{}
			for _, op := range history {
				f := op.Input.(chaosInput).File
				if _, ok := byFile[f]; !ok {
					keys = append(keys, f)
				}
				byFile[f] = append(byFile[f], op)
			}
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, byFile[k])
			}
			return out
		},
		Init: func() any { return chaosState{} },
		Step: func(state, input, output any) (bool, any) {
			return chaosStep(state.(chaosState), input.(chaosInput), output.(chaosOutput))
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(chaosInput), output.(chaosOutput)
			s := fmt.Sprintf("%s %s", in.Kind, in.File)
			if in.Token != "" {
				s += " with " + in.Token
			}
			if in.Target != "" {
				s += " target " + in.Target
			}
			if in.Content != "" {
				s += " " + in.Content
			}
			s += fmt.Sprintf(" @node%d -> %s", in.Node, out.Result)
			if out.Content != "" {
				s += " " + out.Content
			}
			return s
		},
		DescribeState: func(state any) string {
			s := state.(chaosState)
			if !s.Exists {
				return "absent"
			}
			return fmt.Sprintf("%s tokens{%s}", s.Content, s.Tokens)
		},
	}
}

// chaosContentID names content by size and a 64-bit digest: enough to tell any two uploads of one
// run apart, short enough to read in a report. The final check compares whole bytes.
func chaosContentID(b []byte) string {
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%dB:%x", len(b), sum[:8])
}

// TestChaosModel pins the model on small histories, so TestChaos's verdicts mean what they claim:
// an acknowledged delete or token delete is final, an acknowledged upload reads byte-exactly, and
// an unknown outcome is allowed to have happened or not, but not both.
func TestChaosModel(t *testing.T) {
	const never = math.MaxInt64
	type op struct {
		in       chaosInput
		out      chaosOutput
		call, rt int64
	}
	up := func(call, rt int64, res chaosResult) op {
		return op{chaosInput{Kind: chaosUpload, File: "f", Content: "A"}, chaosOutput{Result: res}, call, rt}
	}
	read := func(tok string, call, rt int64, res chaosResult, content string) op {
		return op{chaosInput{Kind: chaosRead, File: "f", Token: tok}, chaosOutput{Result: res, Content: content}, call, rt}
	}
	del := func(call, rt int64, res chaosResult) op {
		return op{chaosInput{Kind: chaosDelete, File: "f", Token: chaosFullToken}, chaosOutput{Result: res}, call, rt}
	}
	mkTok := func(name string, call, rt int64, res chaosResult) op {
		return op{chaosInput{Kind: chaosCreateToken, File: "f", Token: chaosFullToken, Target: name}, chaosOutput{Result: res}, call, rt}
	}
	rmTok := func(name string, call, rt int64, res chaosResult) op {
		return op{chaosInput{Kind: chaosDeleteToken, File: "f", Token: chaosFullToken, Target: name}, chaosOutput{Result: res}, call, rt}
	}
	tests := []struct {
		name string
		ops  []op
		want bool
	}{
		{"upload then exact read", []op{up(0, 1, chaosOK), read("full", 2, 3, chaosOK, "A")}, true},
		{"upload then wrong bytes", []op{up(0, 1, chaosOK), read("full", 2, 3, chaosOK, "B")}, false},
		{"acknowledged upload lost", []op{up(0, 1, chaosOK), read("full", 2, 3, chaosInvalid, "")}, false},
		{"read after acknowledged delete", []op{up(0, 1, chaosOK), del(2, 3, chaosOK), read("full", 4, 5, chaosOK, "A")}, false},
		{"read concurrent with delete", []op{up(0, 1, chaosOK), del(2, 5, chaosOK), read("full", 3, 4, chaosOK, "A")}, true},
		{"unknown delete that never happened", []op{up(0, 1, chaosOK), del(2, never, chaosUnknown), read("full", 4, 5, chaosOK, "A")}, true},
		{"unknown delete seen, then undone", []op{up(0, 1, chaosOK), del(2, never, chaosUnknown),
			read("full", 4, 5, chaosInvalid, ""), read("full", 6, 7, chaosOK, "A")}, false},
		{"unknown delete, later delete refused", []op{up(0, 1, chaosOK), del(2, never, chaosUnknown), del(4, 5, chaosInvalid)}, true},
		{"delete refused while the file exists", []op{up(0, 1, chaosOK), del(2, 3, chaosInvalid)}, false},
		{"read token works until deleted", []op{up(0, 1, chaosOK), mkTok("r1", 2, 3, chaosOK), read("r1", 4, 5, chaosOK, "A"),
			rmTok("r1", 6, 7, chaosOK), read("r1", 8, 9, chaosInvalid, ""), read("full", 10, 11, chaosOK, "A")}, true},
		{"deleted read token works again", []op{up(0, 1, chaosOK), mkTok("r1", 2, 3, chaosOK),
			rmTok("r1", 4, 5, chaosOK), read("r1", 6, 7, chaosOK, "A")}, false},
		{"unknown token delete, token refused then honoured", []op{up(0, 1, chaosOK), mkTok("r1", 2, 3, chaosOK),
			rmTok("r1", 4, never, chaosUnknown), read("r1", 6, 7, chaosInvalid, ""), read("r1", 8, 9, chaosOK, "A")}, false},
		{"token of a deleted file", []op{up(0, 1, chaosOK), mkTok("r1", 2, 3, chaosOK), del(4, 5, chaosOK),
			read("r1", 6, 7, chaosOK, "A")}, false},
		{"unknown upload never seen", []op{up(0, never, chaosUnknown)}, true},
		{"token create refused after delete", []op{up(0, 1, chaosOK), del(2, 3, chaosOK), mkTok("", 4, 5, chaosInvalid)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var history []porcupine.Operation
			for _, o := range tt.ops {
				history = append(history, porcupine.Operation{Input: o.in, Output: o.out, Call: o.call, Return: o.rt})
			}
			if got := porcupine.CheckOperations(chaosModel(), history); got != tt.want {
				t.Fatalf("linearizable = %v, want %v", got, tt.want)
			}
		})
	}
}
