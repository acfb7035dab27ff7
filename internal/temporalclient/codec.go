package temporalclient

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"

	"github.com/replicator/replicator/internal/secretfile"
)

// Metadata of an encrypted payload. The encoding name follows the SDK's
// encryption sample (samples-go/encryption): "binary/encrypted".
const (
	EncodingEncrypted = "binary/encrypted"
	metaKeyID         = "encryption-key-id"
	metaEncoding      = converter.MetadataEncoding
)

// Codec encrypts payloads with AES-256-GCM: each payload, serialized whole
// (metadata and data), becomes nonce || ciphertext || tag, authenticated
// with the key's id, so that a payload cannot be altered or moved to another
// key unnoticed. Payloads that are not encrypted decode unchanged: histories
// written before the codec was turned on stay readable.
type Codec struct {
	aead  cipher.AEAD
	keyID string
}

var _ converter.PayloadCodec = (*Codec)(nil)

// LoadCodec reads a key file: 64 hexadecimal digits (32 bytes), readable by
// its owner only.
func LoadCodec(path string) (*Codec, error) {
	b, err := secretfile.Read(path, 4096)
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("%s: want 64 hexadecimal digits (an AES-256 key; `openssl rand -hex 32`)", path)
	}
	return NewCodec(key)
}

// NewCodec returns the codec of a 32-byte key.
func NewCodec(key []byte) (*Codec, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("payload codec: key of %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	id := sha256.Sum256(append([]byte("replicator payload codec key id\x00"), key...))
	return &Codec{aead: aead, keyID: hex.EncodeToString(id[:8])}, nil
}

// Encode encrypts every payload.
func (c *Codec) Encode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		plain, err := proto.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("payload codec: %w", err)
		}
		nonce := make([]byte, c.aead.NonceSize(), c.aead.NonceSize()+len(plain)+c.aead.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("payload codec: %w", err)
		}
		out[i] = &commonpb.Payload{
			Metadata: map[string][]byte{metaEncoding: []byte(EncodingEncrypted), metaKeyID: []byte(c.keyID)},
			Data:     c.aead.Seal(nonce, nonce, plain, []byte(c.keyID)),
		}
	}
	return out, nil
}

// Decode decrypts encrypted payloads and passes others through.
func (c *Codec) Decode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		if string(p.GetMetadata()[metaEncoding]) != EncodingEncrypted {
			out[i] = p
			continue
		}
		if id := string(p.GetMetadata()[metaKeyID]); id != c.keyID {
			return nil, fmt.Errorf("payload codec: payload encrypted with key %q, this key is %q", id, c.keyID)
		}
		n := c.aead.NonceSize()
		if len(p.Data) < n+c.aead.Overhead() {
			return nil, errors.New("payload codec: encrypted payload too short")
		}
		plain, err := c.aead.Open(nil, p.Data[:n], p.Data[n:], []byte(c.keyID))
		if err != nil {
			return nil, fmt.Errorf("payload codec: payload does not authenticate with key %q: %w", c.keyID, err)
		}
		var dp commonpb.Payload
		if err := proto.Unmarshal(plain, &dp); err != nil {
			return nil, fmt.Errorf("payload codec: %w", err)
		}
		out[i] = &dp
	}
	return out, nil
}

// DataConverter is the SDK's default converter with this codec after it.
func (c *Codec) DataConverter() converter.DataConverter {
	return converter.NewCodecDataConverter(converter.GetDefaultDataConverter(), c)
}

// FailureConverter also encrypts error messages and stack traces, which the
// default converter leaves in plain text in the history.
func (c *Codec) FailureConverter() converter.FailureConverter {
	return temporal.NewDefaultFailureConverter(temporal.DefaultFailureConverterOptions{
		DataConverter: c.DataConverter(), EncodeCommonAttributes: true,
	})
}

// Handler is the codec server the Web UI calls (POST /encode and /decode,
// the SDK's protocol) so that an operator can read payloads. It answers
// only requests from origin (the UI's URL, for CORS) and, when token is
// set, only requests whose Authorization header is "Bearer <token>".
func (c *Codec) Handler(origin, token string) http.Handler {
	inner := converter.NewPayloadCodecHTTPHandler(c)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin != "" {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Allow-Credentials", "true")
			w.Header().Set("Access-Control-Allow-Headers", "Content-Type,X-Namespace,Authorization")
			w.Header().Set("Access-Control-Allow-Methods", "POST,OPTIONS")
			w.Header().Set("Vary", "Origin")
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && o != origin {
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		if token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 8<<20)
		inner.ServeHTTP(w, r)
	})
}
