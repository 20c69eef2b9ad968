package redact

import (
	"bytes"
	"strings"
	"testing"
)

// reference is a deliberately naive model of redaction: mark every byte
// covered by any occurrence of any secret, then replace each maximal run of
// marked bytes by Mask. It also returns the [lo,hi) positions of the masks
// in the output.
func reference(in string, secrets []string) (string, [][2]int) {
	covered := make([]bool, len(in))
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for i := 0; i+len(s) <= len(in); i++ {
			if in[i:i+len(s)] == s {
				for j := i; j < i+len(s); j++ {
					covered[j] = true
				}
			}
		}
	}
	var b strings.Builder
	var masks [][2]int
	for i := 0; i < len(in); {
		if !covered[i] {
			b.WriteByte(in[i])
			i++
			continue
		}
		for i < len(in) && covered[i] {
			i++
		}
		masks = append(masks, [2]int{b.Len(), b.Len() + len(Mask)})
		b.WriteString(Mask)
	}
	return b.String(), masks
}

// checkNoSurvivor asserts the package guarantee: every occurrence of a
// secret in out overlaps one of the masks.
func checkNoSurvivor(t *testing.T, out string, masks [][2]int, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for i := 0; i+len(s) <= len(out); i++ {
			if out[i:i+len(s)] != s {
				continue
			}
			overlaps := false
			for _, m := range masks {
				if i < m[1] && m[0] < i+len(s) {
					overlaps = true
					break
				}
			}
			if !overlaps {
				t.Fatalf("secret %q survives at %d in %q", s, i, out)
			}
		}
	}
}

func TestRedactor_String(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"none", nil, "a secret", "a secret"},
		{"empty secret ignored", []string{""}, "abc", "abc"},
		{"simple", []string{"hunter2"}, "pw=hunter2;", "pw=" + Mask + ";"},
		{"every occurrence", []string{"xy"}, "xy-xy-xy", Mask + "-" + Mask + "-" + Mask},
		{"overlapping self", []string{"aba"}, "ababa", Mask},
		{"overlapping two", []string{"abc", "cde"}, "1abcde2", "1" + Mask + "2"},
		{"substring secret", []string{"secret", "cre"}, "cre secret", Mask + " " + Mask},
		{"adjacent runs merge", []string{"ab", "cd"}, "abcd", Mask},
		{"short secret", []string{"a"}, "banana", "b" + Mask + "n" + Mask + "n" + Mask},
		{"invalid utf-8", []string{"\xff\xfe"}, "x\xff\xfey", "x" + Mask + "y"},
		{"multi-line PEM", []string{"-----BEGIN\nKEY\n-----"}, "k: -----BEGIN\nKEY\n-----\n", "k: " + Mask + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.secrets...)
			if got := r.String(tt.in); got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if got := string(r.Bytes([]byte(tt.in))); got != tt.want {
				t.Errorf("Bytes(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactor_NilAndShort(t *testing.T) {
	var r *Redactor
	if got := r.String("x"); got != "x" {
		t.Errorf("nil Redactor changed input: %q", got)
	}
	if r.Contains("x") || r.Len() != 0 {
		t.Error("nil Redactor reports secrets")
	}
	r = New("abc", "abcdef", "", "abc")
	if r.Len() != 2 || r.Short() != 1 {
		t.Errorf("Len=%d Short=%d, want 2 and 1", r.Len(), r.Short())
	}
	if !r.With("zz").Contains("azzb") || r.Contains("azzb") {
		t.Error("With must add secrets without modifying the receiver")
	}
}

func collapse(s string) string {
	for strings.Contains(s, Mask+Mask) {
		s = strings.ReplaceAll(s, Mask+Mask, Mask)
	}
	return s
}

// writeChunked writes in through a Writer in chunks of the given sizes
// (cycled) and returns what reached the underlying writer.
func writeChunked(t testing.TB, r *Redactor, in string, sizes []int) string {
	var buf bytes.Buffer
	w := r.NewWriter(&buf)
	b := []byte(in)
	for i := 0; len(b) > 0; i++ {
		n := 1
		if len(sizes) > 0 {
			n = max(1, sizes[i%len(sizes)])
		}
		n = min(n, len(b))
		if k, err := w.Write(b[:n]); err != nil || k != n {
			t.Fatalf("Write = %d, %v", k, err)
		}
		b = b[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestWriter_SecretSplitAcrossWrites(t *testing.T) {
	r := New("s3cr3t-value", "value-2")
	in := "before s3cr3t-value-2 middle s3cr3t-value after"
	for _, sizes := range [][]int{{1}, {2, 3}, {7}, {100}} {
		got := writeChunked(t, r, in, sizes)
		want := "before " + Mask + " middle " + Mask + " after"
		if got != want {
			t.Errorf("chunks %v: got %q, want %q", sizes, got, want)
		}
	}
}

func FuzzRedactor(f *testing.F) {
	f.Add("pw=hunter2 and hunter2", "hunter2", "", uint8(3))
	f.Add("ababab", "aba", "bab", uint8(1))
	f.Add("[REDACTED]x", "]x", "RED", uint8(2))
	f.Add("x\xff\xfe\xffy", "\xfe\xff", "\xff", uint8(5))
	f.Fuzz(func(t *testing.T, in, s1, s2 string, chunk uint8) {
		secrets := []string{s1, s2}
		r := New(secrets...)
		want, masks := reference(in, secrets)
		got := r.String(in)
		if got != want {
			t.Fatalf("String(%q) with %q = %q, reference %q", in, secrets, got, want)
		}
		checkNoSurvivor(t, got, masks, secrets)
		if gb := string(r.Bytes([]byte(in))); gb != want {
			t.Fatalf("Bytes = %q, reference %q", gb, want)
		}
		// The streaming writer may split one run into adjacent masks, never
		// more: collapsed, it must match the reference exactly.
		streamed := writeChunked(t, r, in, []int{int(chunk%17) + 1, 1})
		if collapse(streamed) != collapse(want) {
			t.Fatalf("Writer(%q) with %q = %q, reference %q", in, secrets, streamed, want)
		}
	})
}
