package testcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/cairn-dev/cairn/erasure"
)

var (
	chaosDuration = flag.Duration("chaos.duration", 0, "how long TestChaos injects faults (0 skips it; see make chaos)")
	chaosSeed     = flag.Int64("chaos.seed", 0, "seed of TestChaos's fault schedule and workload (0 picks one from the clock)")
)

const (
	chaosNodes   = 5
	chaosWorkers = 6
	chaosPace    = 50 * time.Millisecond // at most one operation per worker per tick
	chaosMaxLive = 6                     // live files per worker, so the final check stays bounded
	chaosMaxDead = 3                     // deleted files a worker keeps probing
	chaosMaxSize = 200_000               // bytes per upload, at most

	chaosReqTimeout = 10 * time.Second // a request that takes longer has an unknown outcome
	chaosCheckTime  = 60 * time.Second // porcupine's budget; past it the verdict is Unknown
	chaosFinalRead  = 30 * time.Second // per final read, to get a definite answer after healing
	chaosSlow       = time.Second      // a request slower than this is counted as slow
	// chaosMargin is what a request may exceed its bound by (scheduling on a loaded machine)
	// before the run fails; the bound is the leader wait plus two shard stalls (see chaosBound).
	chaosMargin   = time.Second
	chaosRecover  = 60 * time.Second // for the healed cluster to be ready again
	chaosMinGap   = time.Second      // the nemesis acts every chaosMinGap + [0, chaosGapRange)
	chaosGapRange = 2 * time.Second

	chaosUnknownRet = int64(math.MaxInt64) // return time of an operation whose outcome is unknown
	chaosFinalActor = chaosWorkers         // porcupine client id of the final check's reads
	chaosCodeBadTok = 2605                 // INVALID_TOKEN: a definite refusal
	chaosMaxReports = 10                   // unexpected answers printed in full
)

// TestChaos is the fault-injection suite (make chaos): a 5-node 3+2 cluster with tight timings
// takes random kills, graceful stop/restarts, minority partitions and single-node isolations every
// 1-3 s, while six workers upload, read, delete and manage read tokens of their own files through
// random nodes. Every operation goes into a porcupine history: a definite answer has its real return
// time, and an answer that leaves the outcome open (transport error, timeout, 5xx) gets an infinite
// one, so the checker may place it anywhere after its call, including never. A read with an unknown
// outcome changes nothing and is left out. A request a node refused to connect never reached it, so
// it is retried on the next node and not recorded.
//
// After the run every fault is healed and every node restarted, and each acknowledged upload that
// was never (possibly) deleted must read byte-exactly through every node, and each acknowledged
// delete (of a file or a read token) must be refused by every node; those reads join the history.
// The history is then checked per file with porcupine: Illegal fails the test, Ok passes, and
// Unknown (the checker ran out of its 60 s) is logged loudly as "not proven" but does not fail,
// because it means the search was too big, not that a violation was found. On failure the HTML
// timeline goes to $CHAOS_REPORT_DIR (default: the system temp dir) as cairn-chaos-<seed>.html and
// the seed and the command to rerun it are printed. The seed fixes the fault schedule and each
// worker's choices; thread timing still varies between runs.
func TestChaos(t *testing.T) {
	if *chaosDuration <= 0 {
		t.Skip("fault-injection suite: run with make chaos, or -args -chaos.duration=1m")
	}
	seed := *chaosSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("chaos seed %d, duration %s", seed, *chaosDuration)

	c := New(t, Options{Nodes: chaosNodes, Erasure: erasure.Geometry{Data: 3, Parity: 2}})
	clients := make([]*Client, chaosNodes)
	for i := range clients {
		clients[i] = NewClient(c.Config(i).HTTPAddr)
		clients[i].HTTP.Timeout = chaosReqTimeout
		clients[i].APIKey = c.RootKey
	}
	start := time.Now()
	now := func() int64 { return time.Since(start).Nanoseconds() }

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	workers := make([]*chaosWorker, chaosWorkers)
	for i := range workers {
		w := &chaosWorker{id: i, clients: clients, rng: rand.New(rand.NewSource(seed + 1 + int64(i))), now: now,
			unknown: map[string]int{}, bound: chaosBound(c)}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	stopWorkers := sync.OnceFunc(func() {
		began := time.Now()
		cancel()
		wg.Wait()
		t.Logf("workers stopped in %s", time.Since(began).Round(time.Millisecond))
	})
	nem := &chaosNemesis{t: t, c: c, rng: rand.New(rand.NewSource(seed)), now: now, down: map[int]chaosFault{}}
	final := &chaosWorker{id: chaosFinalActor, clients: clients, now: now, unknown: map[string]int{}}
	// The check and the report run in a cleanup (before the cluster's own, which was registered
	// first), so they happen whatever way the test ends, even through a Fatal while recovering.
	t.Cleanup(func() {
		stopWorkers()
		history := slices.Clone(final.ops)
		anomalies := final.anomalies
		unknown := map[string]int{}
		var slow int
		var slowest time.Duration
		var stalls []string
		for _, w := range workers {
			stalls = append(stalls, w.stalls...)
			history = append(history, w.ops...)
			anomalies = append(anomalies, w.anomalies...)
			for k, v := range w.unknown {
				unknown[k] += v
			}
			slow, slowest = slow+w.slow, max(slowest, w.slowest)
		}
		t.Logf("unknown outcomes during the faults: %v; while the final check waited for answers: %v", unknown, final.unknown)
		t.Logf("requests slower than %s during the faults: %d, slowest %s; final check slowest %s", chaosSlow, slow,
			slowest.Round(time.Millisecond), final.slowest.Round(time.Millisecond))
		var late []chaosLate
		for _, w := range workers {
			late = append(late, w.overBound...)
		}
		slices.SortFunc(late, func(a, b chaosLate) int { return int(a.at - b.at) })
		bound := chaosBound(c)
		t.Logf("requests over the %s bound (leader wait + 2 shard stalls): %d", bound, len(late))
		for i, l := range late {
			if i == chaosMaxReports {
				t.Logf("... and %d more", len(late)-i)
				break
			}
			t.Logf("over the bound: [%7.2fs] %s took %s", l.at.Seconds(), l.what, l.took.Round(time.Millisecond))
		}
		var beyond int
		for _, l := range late {
			if l.took > bound+chaosMargin {
				beyond++
			}
		}
		if beyond > 0 {
			t.Errorf("%d requests exceeded the %s bound by more than %s", beyond, bound, chaosMargin)
		}
		slices.Sort(stalls)
		for i, s := range stalls {
			if i == chaosMaxReports {
				t.Logf("... and %d more", len(stalls)-i)
				break
			}
			t.Logf("stalled until the %s client timeout: %s", chaosReqTimeout, s)
		}
		for i, a := range anomalies {
			if i == chaosMaxReports {
				t.Errorf("... and %d more unexpected answers", len(anomalies)-i)
				break
			}
			t.Errorf("unexpected answer: %s", a)
		}
		chaosVerify(t, seed, history, nem.annotations)
	})

	nem.run(*chaosDuration)
	stopWorkers()
	healing := time.Now()
	nem.healAll()
	c.WaitReady(chaosRecover)
	c.WaitAlive(chaosNodes, chaosRecover)
	t.Logf("cluster healed, ready and fully meshed in %s", time.Since(healing).Round(time.Millisecond))
	checking := time.Now()
	for _, w := range workers {
		for _, f := range w.files {
			final.finalCheck(t, f)
		}
	}
	t.Logf("final check: %d reads in %s", len(final.ops), time.Since(checking).Round(time.Millisecond))
}

// chaosVerify checks the history with porcupine, logs the outcome, and on any failure of the test
// writes the HTML report and says how to rerun the seed.
func chaosVerify(t *testing.T, seed int64, history []porcupine.Operation, annotations []porcupine.Annotation) {
	t.Helper()
	counts := map[string]int{}
	for _, op := range history {
		counts[fmt.Sprintf("%s/%s", op.Input.(chaosInput).Kind, op.Output.(chaosOutput).Result)]++
	}
	var summary []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		summary = append(summary, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	t.Logf("history: %d operations (%s)", len(history), strings.Join(summary, " "))

	model := chaosModel()
	began := time.Now()
	result, info := porcupine.CheckOperationsVerbose(model, history, chaosCheckTime)
	t.Logf("linearizability: %s (checked in %s)", result, time.Since(began).Round(time.Millisecond))
	switch result {
	case porcupine.Illegal:
		t.Errorf("the history is not linearizable: an acknowledged operation was lost or a refused one took effect")
		chaosLogIllegal(t, model, history)
	case porcupine.Unknown:
		t.Logf("WARNING: linearizability NOT PROVEN: porcupine gave up after %s; the run neither passed nor failed this check", chaosCheckTime)
	}
	if !t.Failed() {
		return
	}
	info.AddAnnotations(annotations)
	dir := os.Getenv("CHAOS_REPORT_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("cairn-chaos-%d.html", seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("report dir: %v", err)
	} else if err := porcupine.VisualizePath(model, info, path); err != nil {
		t.Logf("write report: %v", err)
	} else {
		t.Logf("report: %s", path)
	}
	t.Logf("FAILED with chaos seed %d; rerun the same schedule with: make chaos CHAOS_SEED=%d CHAOS_DURATION=%s",
		seed, seed, *chaosDuration)
}

// chaosLogIllegal prints the operations of every file whose own history is not linearizable.
func chaosLogIllegal(t *testing.T, model porcupine.Model, history []porcupine.Operation) {
	t.Helper()
	shown := 0
	for _, part := range model.Partition(history) {
		if porcupine.CheckOperationsTimeout(model, part, 10*time.Second) != porcupine.Illegal {
			continue
		}
		if shown++; shown > 5 {
			t.Logf("(more illegal files left out; see the report)")
			return
		}
		sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
		t.Logf("illegal history of file %s:", part[0].Input.(chaosInput).File)
		for _, op := range part {
			ret := "never"
			if op.Return != chaosUnknownRet {
				ret = time.Duration(op.Return).String()
			}
			t.Logf("  client %d [%s .. %s] %s", op.ClientId, time.Duration(op.Call), ret,
				model.DescribeOperation(op.Input, op.Output))
		}
	}
}

// chaosFile is one file a worker uploaded and the tokens it made for it. The content is kept as a
// seed and a size, so a long run does not hold every upload in memory.
type chaosFile struct {
	key      string
	full     string
	seed     int64
	size     int
	content  string
	tokens   []*chaosToken
	nextTok  int
	deleted  bool // a delete was answered: the file is gone
	maybeDel bool // a delete's outcome is unknown
}

func (f *chaosFile) data() []byte { return randomData(f.seed, f.size) }

// chaosToken is a read token; deleted means its deletion was acknowledged. A deletion with an
// unknown outcome leaves it undecided, which only the history check can judge.
type chaosToken struct {
	name, secret string
	deleted      bool
}

// chaosWorker is one client of the workload. It owns its files, so its own operations on a file are
// sequential, and only unknown outcomes overlap what follows them.
type chaosWorker struct {
	id        int
	clients   []*Client
	rng       *rand.Rand
	now       func() int64
	ops       []porcupine.Operation
	files     []*chaosFile
	uploaded  int // upload attempts, which number the file keys
	anomalies []string
	unknown   map[string]int // why outcomes were unknown: timeout, transport error, status 503, ...
	slow      int            // requests that took longer than chaosSlow
	stalls    []string       // requests that ran into the client timeout: when they began, where
	slowest   time.Duration
	bound     time.Duration // requests slower than this are reported (0: not tracked)
	overBound []chaosLate
}

// latency notes how long a request took: a node that stalls clients instead of answering shows up
// here even when its answers are correct.
func (w *chaosWorker) latency(in chaosInput, begin int64, d time.Duration) {
	if d > chaosSlow {
		w.slow++
	}
	w.slowest = max(w.slowest, d)
	if w.bound > 0 && d > w.bound {
		w.overBound = append(w.overBound, chaosLate{at: time.Duration(begin), took: d,
			what: fmt.Sprintf("%s %s @node%d", in.Kind, in.File, in.Node)})
	}
}

// chaosLate is a request that took longer than the bound.
type chaosLate struct {
	at, took time.Duration
	what     string
}

// chaosBound is how long any request may take under faults: one leader wait (its read index and
// proposal share it) plus two shard stalls (a peer given up on the way in, another on the way out,
// e.g. a data shard and then a parity shard, or a put and its ack).
func chaosBound(c *Cluster) time.Duration {
	cfg := c.Config(0)
	return cfg.LeaderWait + 2*cfg.ShardStallTimeout
}

func (w *chaosWorker) run(ctx context.Context) {
	tick := time.NewTicker(chaosPace)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if ctx.Err() == nil { // a tick and the cancellation may arrive together
				w.step()
			}
		}
	}
}

func (w *chaosWorker) live() []*chaosFile {
	var out []*chaosFile
	for _, f := range w.files {
		if !f.deleted && !f.maybeDel {
			out = append(out, f)
		}
	}
	return out
}

// step does one random operation.
func (w *chaosWorker) step() {
	live := w.live()
	if len(live) == 0 || (len(live) < chaosMaxLive && w.rng.Intn(8) == 0) {
		w.upload()
		return
	}
	f := w.files[w.rng.Intn(len(w.files))]
	var tok *chaosToken
	if len(f.tokens) > 0 {
		tok = f.tokens[w.rng.Intn(len(f.tokens))]
	}
	switch op := w.rng.Intn(10); {
	case op < 6 && op >= 3 && tok != nil:
		w.read(f, tok.name, tok.secret)
	case op == 7 && tok != nil:
		w.deleteToken(f, tok)
	case op == 6 || op == 7 || op == 8:
		w.createToken(f)
	case op == 9 && (len(live) > 2 || f.deleted || f.maybeDel):
		w.deleteFile(f)
	default:
		w.read(f, chaosFullToken, f.full)
	}
}

// do sends one request through a node the worker's rng picks and records it. A refused connection
// means the node never saw the request, so the next node is tried and nothing is recorded.
func (w *chaosWorker) do(in chaosInput, call func(*Client) (Response, error)) (chaosOutput, Response) {
	node := w.rng.Intn(len(w.clients))
	for range w.clients {
		in.Node = node
		begin := w.now()
		resp, err := call(w.clients[node])
		end := w.now()
		w.latency(in, begin, time.Duration(end-begin))
		if errors.Is(err, syscall.ECONNREFUSED) {
			node = (node + 1) % len(w.clients)
			continue
		}
		out := chaosOutput{Result: w.classify(in, resp, err)}
		switch {
		case out.Result == chaosUnknown && in.Kind == chaosRead:
			return out, resp
		case out.Result == chaosUnknown:
			end = chaosUnknownRet
		case out.Result == chaosOK && in.Kind == chaosRead:
			out.Content = chaosContentID(resp.Body)
		}
		w.ops = append(w.ops, porcupine.Operation{ClientId: w.id, Input: in, Call: begin, Output: out, Return: end})
		return out, resp
	}
	return chaosOutput{Result: chaosUnknown}, Response{}
}

// classify maps an answer to what the client learnt. Answers the workload never provokes (401, 404,
// 409, ...) are collected as anomalies and treated as unknown.
func (w *chaosWorker) classify(in chaosInput, resp Response, err error) chaosResult {
	var netErr net.Error
	switch {
	case errors.As(err, &netErr) && netErr.Timeout():
		w.unknown["timeout"]++
		w.stalls = append(w.stalls, fmt.Sprintf("[%7.2fs] %s %s @node%d", (time.Duration(w.now())-chaosReqTimeout).Seconds(), in.Kind, in.File, in.Node))
		return chaosUnknown
	case err != nil:
		w.unknown["transport error"]++
		return chaosUnknown
	case resp.Status >= 500:
		w.unknown[fmt.Sprintf("status %d", resp.Status)]++
		return chaosUnknown
	case resp.Status == http.StatusOK:
		return chaosOK
	case resp.Status == http.StatusBadRequest && resp.Err().Code == chaosCodeBadTok && in.Kind != chaosUpload:
		return chaosInvalid
	}
	w.anomalies = append(w.anomalies, fmt.Sprintf("%s %s @node%d: status %d body %.200s", in.Kind, in.File, in.Node, resp.Status, resp.Body))
	return chaosUnknown
}

func (w *chaosWorker) upload() {
	f := &chaosFile{key: fmt.Sprintf("w%d-f%d", w.id, w.uploaded), seed: w.rng.Int63(), size: w.rng.Intn(chaosMaxSize + 1)}
	w.uploaded++
	data := f.data()
	f.content = chaosContentID(data)
	out, resp := w.do(chaosInput{Kind: chaosUpload, File: f.key, Content: f.content}, func(cl *Client) (Response, error) {
		_, resp, err := cl.Upload(f.key, data)
		return resp, err
	})
	if out.Result != chaosOK {
		return
	}
	var meta FileMetadata
	if err := json.Unmarshal(resp.Body, &meta); err != nil || len(meta.Tokens) != 1 || meta.Tokens[0].AccessLevel != "full" {
		w.anomalies = append(w.anomalies, fmt.Sprintf("upload %s: answer %.200s, want one full token", f.key, resp.Body))
		return
	}
	f.full = meta.Tokens[0].Token
	w.files = append(w.files, f)
}

func (w *chaosWorker) read(f *chaosFile, name, secret string) {
	w.do(chaosInput{Kind: chaosRead, File: f.key, Token: name}, func(cl *Client) (Response, error) {
		return cl.Download(secret)
	})
}

func (w *chaosWorker) createToken(f *chaosFile) {
	f.nextTok++
	name := fmt.Sprintf("r%d", f.nextTok)
	var grant TokenGrant
	out, _ := w.do(chaosInput{Kind: chaosCreateToken, File: f.key, Token: chaosFullToken, Target: name}, func(cl *Client) (Response, error) {
		g, resp, err := cl.CreateToken(f.full, "read")
		grant = g
		return resp, err
	})
	if out.Result == chaosOK {
		f.tokens = append(f.tokens, &chaosToken{name: name, secret: grant.Token})
	}
}

func (w *chaosWorker) deleteToken(f *chaosFile, tok *chaosToken) {
	out, _ := w.do(chaosInput{Kind: chaosDeleteToken, File: f.key, Token: chaosFullToken, Target: tok.name}, func(cl *Client) (Response, error) {
		return cl.DeleteToken(f.full, tok.secret)
	})
	if out.Result == chaosOK {
		tok.deleted = true
	}
}

func (w *chaosWorker) deleteFile(f *chaosFile) {
	out, _ := w.do(chaosInput{Kind: chaosDelete, File: f.key, Token: chaosFullToken}, func(cl *Client) (Response, error) {
		return cl.Delete(f.full)
	})
	switch out.Result {
	case chaosOK, chaosInvalid:
		f.deleted = true
	case chaosUnknown:
		f.maybeDel = true
	}
	// Keep probing a few deleted files; forget the oldest beyond that.
	var dead int
	for i := len(w.files) - 1; i >= 0; i-- {
		if g := w.files[i]; g.deleted || g.maybeDel {
			if dead++; dead > chaosMaxDead {
				w.files = slices.Delete(w.files, i, i+1)
			}
		}
	}
}

// finalCheck reads f through every node of the healed cluster, retrying until each answer is
// definite: a live file byte-exactly, an acknowledged deletion refused. The reads join the history.
func (w *chaosWorker) finalCheck(t *testing.T, f *chaosFile) {
	t.Helper()
	var want []byte
	if !f.deleted && !f.maybeDel {
		want = f.data()
	}
	for node := range w.clients {
		resp, ok := w.finalRead(f, chaosFullToken, f.full, node)
		switch {
		case !ok:
			t.Errorf("final read of %s through node%d: no definite answer within %s", f.key, node, chaosFinalRead)
		case f.deleted && resp.Status == http.StatusOK:
			t.Errorf("final read of deleted %s through node%d: status %d, want INVALID_TOKEN", f.key, node, resp.Status)
		case want != nil && (resp.Status != http.StatusOK || !bytes.Equal(resp.Body, want)):
			t.Errorf("ACKNOWLEDGED WRITE LOST: final read of %s (%d bytes) through node%d: status %d, %d bytes, byte-exact %v",
				f.key, len(want), node, resp.Status, len(resp.Body), bytes.Equal(resp.Body, want))
		}
		for _, tok := range f.tokens {
			if !tok.deleted {
				continue
			}
			resp, ok := w.finalRead(f, tok.name, tok.secret, node)
			if ok && resp.Status == http.StatusOK {
				t.Errorf("DELETED TOKEN WORKS: %s of %s read through node%d after its delete was acknowledged", tok.name, f.key, node)
			}
		}
	}
}

// finalRead retries a read through one node until its outcome is definite or chaosFinalRead passes.
func (w *chaosWorker) finalRead(f *chaosFile, name, secret string, node int) (Response, bool) {
	deadline := time.Now().Add(chaosFinalRead)
	wait := 10 * time.Millisecond
	for {
		in := chaosInput{Kind: chaosRead, File: f.key, Token: name, Node: node}
		begin := w.now()
		resp, err := w.clients[node].Download(secret)
		end := w.now()
		w.latency(in, begin, time.Duration(end-begin))
		out := chaosOutput{Result: w.classify(in, resp, err)}
		if out.Result != chaosUnknown {
			if out.Result == chaosOK {
				out.Content = chaosContentID(resp.Body)
			}
			w.ops = append(w.ops, porcupine.Operation{ClientId: w.id, Input: in, Call: begin, Output: out, Return: end})
			return resp, true
		}
		if time.Now().After(deadline) {
			return resp, false
		}
		time.Sleep(wait) // polling interval of a condition wait with a deadline
		wait = min(wait*2, 500*time.Millisecond)
	}
}

// chaosFault is a node the nemesis took down, how, and since when.
type chaosFault struct {
	how   string
	since int64
}

// chaosNemesis injects faults on a timer, in the test goroutine (so it may fail the test). It keeps
// at most two nodes faulty at once, counting both downed and partitioned-away nodes, so a majority
// of the five can normally make progress.
type chaosNemesis struct {
	t           *testing.T
	c           *Cluster
	rng         *rand.Rand
	now         func() int64
	down        map[int]chaosFault
	cut         []int // nodes partitioned away from the rest; nil when healed
	cutHow      string
	cutSince    int64
	annotations []porcupine.Annotation
	actions     map[string]int
}

// run acts every 1-3 s until d has passed.
func (n *chaosNemesis) run(d time.Duration) {
	n.actions = map[string]int{}
	began := time.Now()
	end := time.NewTimer(d)
	defer end.Stop()
	next := time.NewTimer(n.gap())
	defer next.Stop()
	for {
		select {
		case <-end.C:
			n.t.Logf("nemesis stopped after %s; actions: %v", time.Since(began).Round(time.Millisecond), n.actions)
			return
		case <-next.C:
			n.act()
			next.Reset(n.gap())
		}
	}
}

func (n *chaosNemesis) gap() time.Duration {
	return chaosMinGap + time.Duration(n.rng.Int63n(int64(chaosGapRange)))
}

func (n *chaosNemesis) logf(format string, args ...any) {
	n.t.Helper()
	n.t.Logf("[%7.2fs] nemesis: %s", time.Duration(n.now()).Seconds(), fmt.Sprintf(format, args...))
}

// healthy lists the nodes that are up and not partitioned away, in index order.
func (n *chaosNemesis) healthy() []int {
	var out []int
	for i := range n.c.Size() {
		if _, down := n.down[i]; !down && !slices.Contains(n.cut, i) {
			out = append(out, i)
		}
	}
	return out
}

func (n *chaosNemesis) act() {
	// Half the time, and always at the limit of two faulty nodes, end a fault rather than add one,
	// so faults come and go instead of piling up.
	faults := len(n.down) + len(n.cut)
	ending := faults == 2 || (faults > 0 && n.rng.Intn(2) == 0)
	var choices []string
	switch {
	case ending && len(n.down) > 0 && n.cut != nil:
		choices = []string{"restart", "heal"}
	case ending && n.cut != nil:
		choices = []string{"heal"}
	case ending:
		choices = []string{"restart"}
	case n.cut == nil:
		choices = []string{"kill", "stop", "isolate", "partition"}
	default:
		choices = []string{"kill", "stop"}
	}
	choice := choices[n.rng.Intn(len(choices))]
	n.actions[choice]++
	healthy := n.healthy()
	victim := healthy[n.rng.Intn(len(healthy))]
	switch choice {
	case "kill":
		n.logf("kill node%d", victim)
		n.c.Kill(victim)
		n.down[victim] = chaosFault{how: "kill", since: n.now()}
	case "stop":
		n.logf("graceful stop of node%d", victim)
		began := time.Now()
		if err := n.c.Stop(victim); err != nil {
			n.logf("graceful stop of node%d: %v", victim, err)
		}
		n.logf("node%d stopped in %s", victim, time.Since(began).Round(time.Millisecond))
		n.down[victim] = chaosFault{how: "graceful stop", since: n.now()}
	case "restart":
		n.restart(n.downed()[n.rng.Intn(len(n.down))])
	case "isolate":
		n.partition("isolate", []int{victim})
	case "partition":
		k := 1 + n.rng.Intn(2-faults)
		n.rng.Shuffle(len(healthy), func(i, j int) { healthy[i], healthy[j] = healthy[j], healthy[i] })
		n.partition("partition", slices.Sorted(slices.Values(healthy[:k])))
	case "heal":
		n.heal()
	}
}

// downed lists the downed nodes in index order, so the rng picks reproducibly.
func (n *chaosNemesis) downed() []int {
	var out []int
	for i := range n.c.Size() {
		if _, ok := n.down[i]; ok {
			out = append(out, i)
		}
	}
	return out
}

func (n *chaosNemesis) restart(i int) {
	f := n.down[i]
	n.logf("restart node%d (down by %s for %s)", i, f.how, time.Duration(n.now()-f.since).Round(time.Millisecond))
	n.c.Restart(i)
	delete(n.down, i)
	n.annotate(fmt.Sprintf("%s node%d", f.how, i), f.since)
}

func (n *chaosNemesis) partition(how string, nodes []int) {
	var names []string
	for _, i := range nodes {
		names = append(names, n.c.Config(i).NodeID)
	}
	n.logf("%s %v from the rest", how, names)
	n.c.Net.Partition(names)
	n.cut, n.cutHow, n.cutSince = nodes, fmt.Sprintf("%s %v", how, names), n.now()
}

func (n *chaosNemesis) heal() {
	n.logf("heal (%s for %s)", n.cutHow, time.Duration(n.now()-n.cutSince).Round(time.Millisecond))
	n.c.Net.Heal()
	n.annotate(n.cutHow, n.cutSince)
	n.cut = nil
}

// healAll ends every fault: the network heals and every downed node restarts.
func (n *chaosNemesis) healAll() {
	if n.cut != nil {
		n.heal()
	}
	for _, i := range n.downed() {
		n.restart(i)
	}
}

func (n *chaosNemesis) annotate(desc string, since int64) {
	n.annotations = append(n.annotations, porcupine.Annotation{Tag: "nemesis", Start: since, End: n.now(), Description: desc})
}
