package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairn-dev/cairn/erasure"
)

// shardGetClient sends shard reads (GET /internal/v1/shards/{id}) over the same authenticated
// HTTP/1.1 wire as the rest of internal RPC, without net/http's Transport. The Transport runs a
// read loop and a write loop goroutine per connection and hands every request and response
// between them and the caller over channels: three goroutine switches and their allocations per
// call, which with the server's side were about a quarter of a node's CPU on GET 4 KiB
// (erasure/DESIGN.md, "Speed"). Here the caller's goroutine writes the request in one write and
// reads the answer from the connection's buffer itself; nothing runs between calls. The server
// is the same net/http handler (RPCServer.openShard), so the wire, mixed versions and the
// handshake are unchanged.
//
// What the Transport gave and this keeps: pooled keep-alive connections (LIFO, at most
// shardGetMaxIdle per peer, none older than shardGetIdleTimeout), a bound on the wait for the
// answer's headers, cancellation by the call's context at any point (the connection's deadline is
// moved into the past, which unblocks a read or write), and one retry on a fresh connection when
// a reused one fails (a peer that restarted leaves pooled connections that look alive).
type shardGetClient struct {
	dial   func(ctx context.Context, addr string) (net.Conn, error)
	logger *slog.Logger

	mu     sync.Mutex
	idle   map[string][]*shardConn // by address, most recently used last
	closed bool
}

const (
	// shardGetMaxIdle is the Transport's MaxIdleConnsPerHost for the other calls: one per read
	// in flight to a peer, with 64 downloads at once.
	shardGetMaxIdle = 64
	// shardGetIdleTimeout closes pooled connections unused for this long (below the server's
	// 2-minute idle timeout, so a pooled connection is rarely one the server already closed).
	shardGetIdleTimeout = 90 * time.Second
	// shardGetReadBuffer holds a small shard's whole answer (headers, 96-byte header, a 2 KiB
	// frame) for one read syscall; larger frames are read past it, straight into the caller's
	// buffer.
	shardGetReadBuffer = 16 << 10
)

// aLongTimeAgo is a deadline in the past: setting it fails every blocked and later I/O on a
// connection at once.
var aLongTimeAgo = time.Unix(1, 0)

type shardConn struct {
	conn      net.Conn
	br        *bufio.Reader
	req       []byte // the request being written, reused
	idleSince time.Time
}

func newShardGetClient(dial func(ctx context.Context, addr string) (net.Conn, error), logger *slog.Logger) *shardGetClient {
	return &shardGetClient{dial: dial, logger: logger, idle: make(map[string][]*shardConn)}
}

// closeIdle closes the pooled connections; from then on connections are closed after their call
// instead of pooled. Calls in flight are unaffected.
func (c *shardGetClient) closeIdle() {
	c.mu.Lock()
	idle := c.idle
	c.idle = make(map[string][]*shardConn)
	c.closed = true
	c.mu.Unlock()
	for _, conns := range idle {
		for _, sc := range conns {
			sc.conn.Close()
		}
	}
}

// get takes the most recently used idle connection to addr, or dials one. reused says which.
func (c *shardGetClient) get(ctx context.Context, addr string) (sc *shardConn, reused bool, err error) {
	now := time.Now()
	c.mu.Lock()
	conns := c.idle[addr]
	for len(conns) > 0 {
		sc = conns[len(conns)-1]
		conns[len(conns)-1] = nil
		conns = conns[:len(conns)-1]
		if now.Sub(sc.idleSince) < shardGetIdleTimeout {
			break
		}
		// The most recent one is too old, so all the others are too: close them all.
		for _, old := range conns {
			old.conn.Close()
		}
		conns = conns[:0]
		sc.conn.Close()
		sc = nil
	}
	c.idle[addr] = conns
	c.mu.Unlock()
	if sc != nil {
		return sc, true, nil
	}
	sc, err = c.dialConn(ctx, addr)
	return sc, false, err
}

func (c *shardGetClient) dialConn(ctx context.Context, addr string) (*shardConn, error) {
	conn, err := c.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &shardConn{conn: conn, br: bufio.NewReaderSize(conn, shardGetReadBuffer)}, nil
}

// put returns a connection whose last answer was read to its end to the pool.
func (c *shardGetClient) put(addr string, sc *shardConn) {
	sc.idleSince = time.Now()
	c.mu.Lock()
	if conns := c.idle[addr]; !c.closed && len(conns) < shardGetMaxIdle {
		c.idle[addr] = append(conns, sc)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	sc.conn.Close()
}

// open reads the header and frame bytes [off, off+n) of shard id from addr, as RPCClient.OpenShard
// documents.
func (c *shardGetClient) open(ctx context.Context, addr string, id erasure.ShardID, off, n int64) (io.ReadCloser, error) {
	sc, reused, err := c.get(ctx, addr)
	if err != nil {
		return nil, err
	}
	body, answered, err := c.roundTrip(ctx, addr, sc, id, off, n)
	if err != nil && !answered && reused && ctx.Err() == nil {
		c.logger.Debug("rpc retry on fresh connection", "addr", addr, "shard", id.String(), "err", err)
		if sc, err = c.dialConn(ctx, addr); err != nil {
			return nil, err
		}
		body, _, err = c.roundTrip(ctx, addr, sc, id, off, n)
	}
	return body, err
}

// roundTrip sends one shard read on sc and returns its body. On any failure sc is closed;
// answered says the failure is the peer's answer (a status and an error code, mapped back to its
// sentinel), which a fresh connection would not change.
func (c *shardGetClient) roundTrip(ctx context.Context, addr string, sc *shardConn, id erasure.ShardID, off, n int64) (body io.ReadCloser, answered bool, err error) {
	// The answer's headers must come within rpcResponseHeaderTimeout, as for the other calls. The
	// deadline is set before the context's hook is armed, so a cancellation always wins.
	if err := sc.conn.SetDeadline(time.Now().Add(rpcResponseHeaderTimeout)); err != nil {
		sc.conn.Close()
		return nil, false, err
	}
	b := &shardGetBody{c: c, addr: addr, sc: sc, ctx: ctx}
	b.stop = context.AfterFunc(ctx, b.cancelled)
	fail := func(err error) (io.ReadCloser, bool, error) {
		b.stop()
		sc.conn.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, false, fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return nil, false, err
	}

	sc.req = appendShardGetRequest(sc.req[:0], id, off, n)
	if _, err := sc.conn.Write(sc.req); err != nil {
		return fail(err)
	}
	head, err := readShardAnswerHead(sc.br)
	if err != nil {
		return fail(err)
	}
	if head.status != http.StatusOK {
		if head.contentLength < 0 || head.contentLength > rpcMaxErrorBody {
			return fail(fmt.Errorf("%w: %d %s", ErrRemote, head.status, http.StatusText(head.status)))
		}
		err := remoteError(&http.Response{ // reads and closes the (small) error body
			StatusCode: head.status,
			Status:     strconv.Itoa(head.status) + " " + http.StatusText(head.status),
			Body:       io.NopCloser(io.LimitReader(sc.br, head.contentLength)),
		})
		b.stop()
		sc.conn.Close()
		return nil, true, err
	}
	if head.contentLength < 0 {
		// openShard always sends a Content-Length; anything else is not its answer.
		return fail(fmt.Errorf("%w: shard answer without a Content-Length", ErrRemote))
	}
	b.remaining, b.keepAlive = head.contentLength, !head.close
	// The body is read from sc.br directly, without a deadline: core's stall guard bounds each
	// read through the context.
	b.mu.Lock()
	fired := b.fired
	if !fired {
		err = sc.conn.SetDeadline(time.Time{})
	}
	b.mu.Unlock()
	if fired {
		return fail(ctx.Err())
	}
	if err != nil {
		return fail(err)
	}
	if head.contentLength == n {
		// A protocol-1 peer (v0.1.0) knows no header and sends the raw frames of its v1 shard:
		// put the legacy header in front, as the local store does for v1 shards.
		return &legacyShardGetBody{header: erasure.LegacyShardHeader(), body: b}, false, nil
	}
	return b, false, nil
}

// shardAnswerHead is what a shard read needs of an answer's status line and headers.
type shardAnswerHead struct {
	status        int
	contentLength int64 // -1: none, or a chunked body
	close         bool  // the peer closes the connection after this answer
}

// shardAnswerMaxHeaders bounds the header lines of an answer; net/http's server sends three.
const shardAnswerMaxHeaders = 64

var errShardAnswerMalformed = fmt.Errorf("%w: malformed shard answer", ErrRemote)

// readShardAnswerHead reads an HTTP/1.x status line and headers from br, keeping the three
// headers a shard read acts on (Content-Length, Transfer-Encoding, Connection). Lines are looked at
// in br's buffer, never copied: http.ReadResponse built a header map of strings per answer. A
// line longer than the buffer, a bad status line, a malformed or repeated Content-Length and too
// many headers are refused.
func readShardAnswerHead(br *bufio.Reader) (shardAnswerHead, error) {
	head := shardAnswerHead{contentLength: -1}
	line, err := readAnswerLine(br)
	if err != nil {
		return head, err
	}
	// "HTTP/1.1 200 OK": a version, a space, three digits, then a space or the end.
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return head, errShardAnswerMalformed
	}
	head.close = line[7] != '1' // an HTTP/1.0 answer closes unless it says keep-alive; never reuse it
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return head, errShardAnswerMalformed
		}
		head.status = head.status*10 + int(c-'0')
	}
	chunked := false
	for range shardAnswerMaxHeaders {
		line, err := readAnswerLine(br)
		if err != nil {
			return head, err
		}
		if len(line) == 0 {
			if chunked {
				head.contentLength = -1
			}
			return head, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return head, errShardAnswerMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			v, err := strconv.ParseInt(string(value), 10, 64) // a short string: no allocation
			if err != nil || v < 0 || head.contentLength >= 0 && head.contentLength != v {
				return head, errShardAnswerMalformed
			}
			head.contentLength = v
		case asciiEqualFold(name, "Transfer-Encoding"):
			chunked = true
		case asciiEqualFold(name, "Connection"):
			if bytes.Contains(bytes.ToLower(value), []byte("close")) {
				head.close = true
			}
		}
	}
	return head, errShardAnswerMalformed
}

// readAnswerLine returns the next line of br without its CRLF (or LF), as a view of br's buffer.
func readAnswerLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errShardAnswerMalformed
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// asciiEqualFold reports whether b is s, ignoring the case of ASCII letters only.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	lower := func(c byte) byte {
		if 'A' <= c && c <= 'Z' {
			return c + 'a' - 'A'
		}
		return c
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

// appendShardGetRequest appends the request line and headers of a shard read. The server is
// net/http's, so the request carries what HTTP/1.1 requires (a Host, which the server's routes
// ignore: a fixed name keeps peer addresses out of the request bytes) and nothing else.
func appendShardGetRequest(b []byte, id erasure.ShardID, off, n int64) []byte {
	b = append(b, "GET "...)
	b = append(b, rpcShardPath(id)...)
	b = append(b, "?off="...)
	b = strconv.AppendInt(b, off, 10)
	b = append(b, "&n="...)
	b = strconv.AppendInt(b, n, 10)
	return append(b, "&"+rpcShardHeaderParam+"=1 HTTP/1.1\r\nHost: cairn-cluster\r\n\r\n"...)
}

// shardGetBody is a shard answer's body, read from its connection's buffer. Its connection goes
// back to the pool on Close once the body was read to its end; otherwise it is closed.
type shardGetBody struct {
	c         *shardGetClient
	addr      string
	sc        *shardConn
	ctx       context.Context
	stop      func() bool // disarms cancelled
	remaining int64
	keepAlive bool
	err       error

	// mu orders the context's hook (cancelled) against Close: a caller commonly cancels the
	// call's context right before it closes a body it read to the end (core's stall guard does),
	// and that connection is still good for the pool.
	mu     sync.Mutex
	fired  bool // cancelled moved the deadline into the past
	closed bool
}

// cancelled runs when the call's context ends: the connection's deadline moves into the past,
// which fails a blocked read or write at once.
func (b *shardGetBody) cancelled() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.fired = true
		b.sc.conn.SetDeadline(aLongTimeAgo)
	}
}

func (b *shardGetBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.remaining == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.sc.br.Read(p)
	b.remaining -= int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			// The peer closed before the Content-Length it promised: a broken stream, never a
			// short shard.
			err = io.ErrUnexpectedEOF
		}
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		b.err = err
	}
	return n, err
}

// Close ends the call: a body read to its end returns its connection to the pool (unless the peer
// asked to close it); any other is closed.
func (b *shardGetBody) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	fired := b.fired
	b.mu.Unlock()
	b.stop()
	if b.err == nil && b.remaining == 0 && b.keepAlive {
		// Read to its end, nothing is pending on the connection: a deadline the hook set
		// can be lifted and the connection reused.
		if !fired || b.sc.conn.SetDeadline(time.Time{}) == nil {
			b.c.put(b.addr, b.sc)
			return nil
		}
	}
	return b.sc.conn.Close()
}

// legacyShardGetBody is a v1 shard from a protocol-1 peer with the legacy header in front.
type legacyShardGetBody struct {
	header []byte
	body   *shardGetBody
}

func (l *legacyShardGetBody) Read(p []byte) (int, error) {
	if len(l.header) > 0 {
		n := copy(p, l.header)
		l.header = l.header[n:]
		return n, nil
	}
	return l.body.Read(p)
}

func (l *legacyShardGetBody) Close() error { return l.body.Close() }

// shardReadParams are the query parameters of a shard read, as url.Values.Get would give them.
type shardReadParams struct{ off, n, header string }

// shardReadQuery reads a shard read's parameters. A query of plain pairs (what every reader
// sends) is split in place; one with escapes or separators url.ParseQuery treats specially goes
// through it, so the answer is the same either way. The map url.Query builds was five allocations
// per shard read.
func shardReadQuery(u *url.URL) shardReadParams {
	raw := u.RawQuery
	if strings.ContainsAny(raw, "%+;") {
		q := u.Query()
		return shardReadParams{off: q.Get("off"), n: q.Get("n"), header: q.Get(rpcShardHeaderParam)}
	}
	var p shardReadParams
	var seenOff, seenN, seenHeader bool
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		key, value, _ := strings.Cut(pair, "=")
		switch { // the first value of a key wins, as with url.Values.Get
		case key == "off" && !seenOff:
			p.off, seenOff = value, true
		case key == "n" && !seenN:
			p.n, seenN = value, true
		case key == rpcShardHeaderParam && !seenHeader:
			p.header, seenHeader = value, true
		}
	}
	return p
}
