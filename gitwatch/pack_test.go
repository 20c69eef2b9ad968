package gitwatch

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
)

// packEntry is one object of a hand-made pack: its header (type, size),
// then extra (a delta's base reference), then data compressed.
func packEntry(typ byte, size int, extra, data []byte) []byte {
	var b bytes.Buffer
	c := typ<<4 | byte(size&15)
	size >>= 4
	for size > 0 {
		b.WriteByte(c | 0x80)
		c, size = byte(size&0x7f), size>>7
	}
	b.WriteByte(c)
	b.Write(extra)
	zw := zlib.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

func makePack(entries ...[]byte) []byte {
	b := bytes.NewBufferString("PACK\x00\x00\x00\x02")
	binary.Write(b, binary.BigEndian, uint32(len(entries)))
	for _, e := range entries {
		b.Write(e)
	}
	b.Write(make([]byte, packTrailerLen))
	return b.Bytes()
}

func testLimiter(maxObject int64) *limiter {
	return newLimiter(Source{URL: "file:///repo", MaxObjectBytes: maxObject})
}

// TestScanPack_DeltaTarget: a delta of a few bytes that makes a 1 TiB
// object is refused from the sizes at its start.
func TestScanPack_DeltaTarget(t *testing.T) {
	base := []byte("hello")
	delta := binary.AppendUvarint(binary.AppendUvarint(nil, uint64(len(base))), 1<<40)
	delta = append(delta, 0x90, 0xff) // a copy instruction, never run
	pack := makePack(packEntry(3, len(base), nil, base), packEntry(objOfsDelta, len(delta), []byte{0x10}, delta))
	if err := scanPack(bytes.NewReader(pack), testLimiter(1<<20)); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "1099511627776") {
		t.Fatalf("scanPack = %v, want ErrTooLarge for the delta's target", err)
	}
	if err := scanPack(bytes.NewReader(pack), testLimiter(1<<41)); err != nil {
		t.Fatalf("under the limit: %v", err)
	}
	if err := scanPack(bytes.NewReader(pack[:len(pack)-30]), testLimiter(1<<41)); err == nil || errors.Is(err, ErrTooLarge) {
		t.Fatalf("a truncated pack: %v, want a format error", err)
	}
}

// TestScanPack_RealPack reads a pack git made, with deltas of both kinds,
// and finds the largest object and delta result as git reports them.
func TestScanPack_RealPack(t *testing.T) {
	g := newGitRepo(t)
	rng := rand.NewChaCha8([32]byte{2})
	text := make([]byte, 200<<10)
	rng.Read(text)
	for i := 0; i < 5; i++ {
		copy(text[i*1000:], fmt.Sprintf("edit %d", i))
		g.commit("big.bin", string(text[:len(text)-i*10000]), fmt.Sprintf("c%d", i))
	}
	g.git("gc", "-q")
	bases := g.git("cat-file", "--batch-all-objects", "--batch-check=%(deltabase)")
	if strings.Count(bases, "0000000000000000000000000000000000000000") == strings.Count(bases, "\n")+1 {
		t.Fatalf("git made no delta, so the test proves nothing:\n%s", bases)
	}
	for _, refDelta := range []bool{false, true} {
		args := []string{"pack-objects", "--stdout", "--revs"}
		if refDelta {
			args = append(args, "--no-delta-base-offset")
		}
		cmd := exec.Command("git", args...)
		cmd.Dir = g.dir
		cmd.Stdin = strings.NewReader("main\n")
		pack, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if err := scanPack(bytes.NewReader(pack), testLimiter(200<<10)); err != nil {
			t.Fatalf("ref deltas %v: %v", refDelta, err)
		}
		// Objects are at most 200 KiB, deltified or not: one byte less fails.
		if err := scanPack(bytes.NewReader(pack), testLimiter(200<<10-1)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("ref deltas %v, limit 200 KiB-1: %v", refDelta, err)
		}
	}
}
