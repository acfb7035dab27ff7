package transfer

import (
	"bufio"
	"time"
)

// Hooks for tests that speak the protocol by hand.

type TestFrame = frame

const (
	MsgError     = msgError
	MsgHelloRep  = msgHelloRep
	FrameZero    = frameZero
	FramePartial = framePartial
)

func AppendFrameHeader(b []byte, f TestFrame) []byte { return appendFrameHeader(b, f) }

func EncodeHello(h Hello) []byte {
	var e encoder
	return encodeHello(&e, h)
}

func EncodeDone(frames int64) []byte {
	var e encoder
	return encodePosition(&e, msgDone, frames)
}

func ReadMessage(br *bufio.Reader) (byte, []byte, error) {
	typ, n, err := readHeader(br)
	if err != nil {
		return 0, nil, err
	}
	body, err := readBody(br, nil, n, 1<<20, "test")
	return typ, body, err
}

func DecodeError(body []byte) (bool, string, error) {
	flags, msg, err := decodeError(body)
	return flags&errRetryable != 0, msg, err
}

// SetMemSums changes how many digests the sender keeps in memory.
func SetMemSums(n int64) (restore func()) {
	old := memSums
	memSums = n
	return func() { memSums = old }
}

// SetPassedInterval changes how often the sender reports skipped blocks.
func SetPassedInterval(d time.Duration) (restore func()) {
	old := passedInterval
	passedInterval = d
	return func() { passedInterval = old }
}
