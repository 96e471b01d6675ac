package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
)

type rpcKeyOpRequest struct {
	Key string `json:"key"` // base64 key, or (use, remove) its fingerprint
}

// ServeKeyring adds the routes through which KeyringAdmin on another node reads and changes this
// node's gossip keyring. Like every internal route they are reachable only through the cluster
// port's handshake. Call it once.
func (s *RPCServer) ServeKeyring(k LocalKeyring) {
	s.mux.HandleFunc("GET "+rpcPrefix+"/keyring", func(w http.ResponseWriter, r *http.Request) {
		s.writeJSON(w, http.StatusOK, k.LocalKeys())
	})
	s.mux.HandleFunc("POST "+rpcPrefix+"/keyring/{op}", func(w http.ResponseWriter, r *http.Request) {
		var req rpcKeyOpRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			s.writeJSON(w, http.StatusBadRequest, rpcError{Code: rpcCodeBadRequest, Message: "want {\"key\": string}"})
			return
		}
		if err := k.ApplyKeyOp(r.PathValue("op"), req.Key); err != nil {
			code := rpcCodeInternal
			if errors.Is(err, clusterapi.ErrInvalidGossipKey) || errors.Is(err, clusterapi.ErrKeyringRefused) {
				code = rpcCodeBadRequest
			}
			s.writeJSON(w, http.StatusBadRequest, rpcError{Code: code, Message: err.Error()})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// Keyring asks the node at addr for its gossip keyring.
func (c *RPCClient) Keyring(ctx context.Context, addr string) (clusterapi.MemberKeys, error) {
	var out clusterapi.MemberKeys
	if err := c.callJSON(ctx, http.MethodGet, addr, rpcPrefix+"/keyring", nil, true, &out); err != nil {
		return clusterapi.MemberKeys{}, fmt.Errorf("keyring of %s: %w", addr, err)
	}
	return out, nil
}

// KeyringOp runs one keyring operation on the node at addr.
func (c *RPCClient) KeyringOp(ctx context.Context, addr, op, key string) error {
	body, err := json.Marshal(rpcKeyOpRequest{Key: key})
	if err != nil {
		return err
	}
	resp, err := c.call(ctx, http.MethodPost, addr, rpcPrefix+"/keyring/"+op, bytes.NewReader(body), "application/json", false)
	if err != nil {
		return fmt.Errorf("keyring %s on %s: %w", op, addr, err)
	}
	return rpcDiscard(resp)
}
