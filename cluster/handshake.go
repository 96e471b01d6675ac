package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Connection kinds: the byte after the magic routes an authenticated connection to its listener.
const (
	// ConnRaft carries hashicorp/raft's NetworkTransport.
	ConnRaft byte = 'R'
	// ConnRPC carries internal HTTP/1.1 RPC (shards, forwarding, read index).
	ConnRPC byte = 'H'
)

// ErrAuthFailed means the peer could not prove it holds the cluster secret, or refused our proof.
var ErrAuthFailed = errors.New("cluster: handshake authentication failed")

// The handshake is a mutual challenge-response over HMAC-SHA256. Each side proves knowledge of the
// secret over both nonces, so a recorded exchange cannot be replayed (the other side's nonce is
// fresh) and the labels "s"/"c" stop one side's proof being reflected back as the other's.
const (
	hsMagic = "CAIRN\x01"
	// hsMinSecret keeps the secret out of brute-force reach; shorter secrets are refused outright.
	hsMinSecret = 16
	hsNonceLen  = 32
	hsMACLen    = sha256.Size
	hsHelloLen  = len(hsMagic) + 1 + hsNonceLen
	hsOK        = 0x01
	// hsDefaultTimeout bounds a handshake when the caller's context has no earlier deadline, so a
	// silent peer can neither hold a dialer nor a mux slot for long.
	hsDefaultTimeout = 5 * time.Second
)

func hsValidKind(kind byte) bool { return kind == ConnRaft || kind == ConnRPC }

func hsCheckSecret(secret []byte) error {
	if len(secret) < hsMinSecret {
		return fmt.Errorf("cluster: secret is %d bytes, need at least %d", len(secret), hsMinSecret)
	}
	return nil
}

// hsMAC is one side's proof. binding is the TLS channel's exported keying material (nil on plain
// TCP): with it the proof is valid for this TLS session only, so it can neither be relayed into
// another channel nor made without the secret by someone who merely holds a certificate.
func hsMAC(secret []byte, label byte, kind byte, clientNonce, serverNonce, binding []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte{label, kind})
	m.Write(clientNonce)
	m.Write(serverNonce)
	m.Write(binding)
	return m.Sum(nil)
}

// hsServer runs the server side on a fresh connection and returns the kind the client asked for.
// The caller sets the deadline; every read is a fixed size, so garbage or a huge blob costs at most
// hsHelloLen+hsMACLen bytes of reading.
func hsServer(conn net.Conn, secret, binding []byte) (byte, error) {
	hello := make([]byte, hsHelloLen)
	if _, err := io.ReadFull(conn, hello); err != nil {
		return 0, fmt.Errorf("read hello: %w", err)
	}
	if string(hello[:len(hsMagic)]) != hsMagic {
		return 0, errors.New("bad magic")
	}
	kind := hello[len(hsMagic)]
	if !hsValidKind(kind) {
		return 0, fmt.Errorf("unknown connection kind %q", kind)
	}
	clientNonce := hello[len(hsMagic)+1:]
	reply := make([]byte, hsNonceLen, hsNonceLen+hsMACLen)
	if _, err := rand.Read(reply); err != nil {
		return 0, fmt.Errorf("server nonce: %w", err)
	}
	serverNonce := reply[:hsNonceLen]
	reply = append(reply, hsMAC(secret, 's', kind, clientNonce, serverNonce, binding)...)
	if _, err := conn.Write(reply); err != nil {
		return 0, fmt.Errorf("write challenge: %w", err)
	}
	proof := make([]byte, hsMACLen)
	if _, err := io.ReadFull(conn, proof); err != nil {
		return 0, fmt.Errorf("read client proof: %w", err)
	}
	if !hmac.Equal(proof, hsMAC(secret, 'c', kind, clientNonce, serverNonce, binding)) {
		return 0, fmt.Errorf("client proof: %w", ErrAuthFailed)
	}
	if _, err := conn.Write([]byte{hsOK}); err != nil {
		return 0, fmt.Errorf("write ack: %w", err)
	}
	return kind, nil
}

// hsClient runs the client side; the caller sets the deadline.
func hsClient(conn net.Conn, kind byte, secret, binding []byte) error {
	hello := make([]byte, 0, hsHelloLen)
	hello = append(hello, hsMagic...)
	hello = append(hello, kind)
	clientNonce := make([]byte, hsNonceLen)
	if _, err := rand.Read(clientNonce); err != nil {
		return fmt.Errorf("client nonce: %w", err)
	}
	hello = append(hello, clientNonce...)
	if _, err := conn.Write(hello); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	challenge := make([]byte, hsNonceLen+hsMACLen)
	if _, err := io.ReadFull(conn, challenge); err != nil {
		return fmt.Errorf("read challenge: %w", err)
	}
	serverNonce := challenge[:hsNonceLen]
	if !hmac.Equal(challenge[hsNonceLen:], hsMAC(secret, 's', kind, clientNonce, serverNonce, binding)) {
		return fmt.Errorf("server proof: %w", ErrAuthFailed)
	}
	if _, err := conn.Write(hsMAC(secret, 'c', kind, clientNonce, serverNonce, binding)); err != nil {
		return fmt.Errorf("write proof: %w", err)
	}
	var ack [1]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		if hsIsTimeout(err) {
			return fmt.Errorf("read ack: %w", err)
		}
		// The server closes without an ack when it rejects our proof.
		return fmt.Errorf("server refused proof (%v): %w", err, ErrAuthFailed)
	}
	if ack[0] != hsOK {
		return fmt.Errorf("server sent ack %#x: %w", ack[0], ErrAuthFailed)
	}
	return nil
}

func hsIsTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// DialCluster opens an authenticated connection of the given kind to a node's cluster address:
// mutual TLS first when sec.TLS is set, then the HMAC handshake (bound to the TLS channel). ctx
// bounds the dial and both handshakes (at most 5 s for the handshakes when ctx has no earlier
// deadline); the returned connection has no deadline set.
func DialCluster(ctx context.Context, nw Network, addr string, kind byte, sec Security) (net.Conn, error) {
	if err := sec.validate(); err != nil {
		return nil, err
	}
	if !hsValidKind(kind) {
		return nil, fmt.Errorf("cluster: dial %s: unknown connection kind %q", addr, kind)
	}
	raw, err := nw.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: dial %s: %w", addr, err)
	}
	deadline := time.Now().Add(hsDefaultTimeout)
	d, ok := ctx.Deadline()
	ctxDeadline := ok && d.Before(deadline)
	if ctxDeadline {
		deadline = d
	}
	if err := raw.SetDeadline(deadline); err != nil {
		raw.Close()
		return nil, fmt.Errorf("cluster: dial %s: %w", addr, err)
	}
	// Cancellation must interrupt a handshake blocked in I/O, not only the deadline.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	conn := raw
	if sec.TLS != nil {
		tc := tls.Client(raw, sec.TLS.clientConfig())
		// The raw deadline and the AfterFunc above bound this handshake; ctx is not passed in so
		// that a cancel maps to the same errors as the HMAC step.
		err = tc.Handshake()
		if err != nil {
			err = fmt.Errorf("tls: %w", err)
		}
		conn = tc
	}
	if err == nil {
		var binding []byte
		if binding, err = channelBinding(conn); err == nil {
			err = hsClient(conn, kind, sec.Secret, binding)
		}
	}
	if !stop() && err == nil {
		// ctx ended just after success and may have poisoned the deadline: honour the cancel.
		err = context.Cause(ctx)
	}
	if err != nil {
		conn.Close()
		cause := context.Cause(ctx)
		if cause == nil && ctxDeadline && hsIsTimeout(err) {
			// The socket deadline was the context's and can fire a moment before ctx.Err is set.
			cause = context.DeadlineExceeded
		}
		if cause != nil {
			return nil, fmt.Errorf("cluster: handshake with %s: %w (%v)", addr, cause, err)
		}
		return nil, fmt.Errorf("cluster: handshake with %s: %w", addr, err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cluster: handshake with %s: %w", addr, err)
	}
	return conn, nil
}
