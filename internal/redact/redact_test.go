package redact

import (
	"bytes"
	"strings"
	"testing"
)

const wordChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"

// modelWord is the naive model of "in[k] continues a word, away from the
// occurrence in direction dir (-1 left, +1 right)".
func modelWord(in string, k, dir int) bool {
	if k < 0 || k >= len(in) {
		return false
	}
	letter := func(c byte) bool { return c >= 0x80 || strings.IndexByte(wordChars, c) >= 0 }
	if in[k] == '.' || in[k] == '-' {
		n := k + dir
		return n >= 0 && n < len(in) && letter(in[n])
	}
	return letter(in[k])
}

// reference is a deliberately naive model of redaction: mark every byte
// covered by a masked occurrence (any occurrence of a long secret, a
// standing-alone one of a short secret), then replace each maximal run of
// marked bytes by Mask. It also returns the [lo,hi) positions of the masks
// in the output.
func reference(in string, secrets []string) (string, [][2]int) {
	covered := make([]bool, len(in))
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for i := 0; i+len(s) <= len(in); i++ {
			if in[i:i+len(s)] != s {
				continue
			}
			if len(s) < ShortSecretLen && (modelWord(in, i-1, -1) || modelWord(in, i+len(s), +1)) {
				continue
			}
			for j := i; j < i+len(s); j++ {
				covered[j] = true
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

// checkNoSurvivor asserts the package guarantee for long secrets: every
// occurrence of one in out overlaps one of the masks.
func checkNoSurvivor(t *testing.T, out string, masks [][2]int, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) < ShortSecretLen {
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
	const M = Mask
	tests := []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"none", nil, "a secret", "a secret"},
		{"empty secret ignored", []string{""}, "abc", "abc"},
		{"simple", []string{"hunter2"}, "pw=hunter2;", "pw=" + M + ";"},
		{"long inside words", []string{"hunter2"}, "xhunter2hunter2y", "x" + M + "y"},
		{"every occurrence", []string{"xyzzy1"}, "xyzzy1-xyzzy1-xyzzy1", M + "-" + M + "-" + M},
		{"overlapping self", []string{"abaaba"}, "abaabaaba", M},
		{"overlapping two", []string{"abcdef", "defghi"}, "1abcdefghi2", "1" + M + "2"},
		{"substring secret", []string{"secret", "cre"}, "cre secret", M + " " + M},
		{"adjacent runs merge", []string{"abcdef", "ghijkl"}, "abcdefghijkl", M},
		{"invalid utf-8", []string{"\xff\xfe\xff\xfe\xff\xfe"}, "x\xff\xfe\xff\xfe\xff\xfey", "x" + M + "y"},
		{"multi-line PEM", []string{"-----BEGIN\nKEY\n-----"}, "k: -----BEGIN\nKEY\n-----\n", "k: " + M + "\n"},

		// Short secrets: masked where they stand alone only.
		{"short whole text", []string{"x"}, "x", M},
		{"short env value", []string{"x"}, "PASSWORD=x", "PASSWORD=" + M},
		{"short quoted", []string{"x"}, `{"pw":"x"}`, `{"pw":"` + M + `"}`},
		{"short flag value", []string{"x"}, "--password x --user y", "--password " + M + " --user y"},
		{"short flag =value", []string{"x"}, "--password=x,", "--password=" + M + ","},
		{"short yaml value", []string{"x"}, "proxy:\n  host: x\n", "proxy:\n  host: " + M + "\n"},
		{"short end of sentence", []string{"pw1"}, "password is pw1.", "password is " + M + "."},
		{"short dashes", []string{"x"}, "--x -x- x-", "--" + M + " -" + M + "- " + M + "-"},
		{"short in words kept", []string{"x"}, "proxy: 'x.example' x-ray v1.x KEY_x éx", "proxy: 'x.example' x-ray v1.x KEY_x éx"},
		{"short in banana kept", []string{"a"}, "banana", "banana"},
		{"short substring of long", []string{"secret", "cre"}, "secrets cre.x", M + "s cre.x"},
		{"short adjacent to long", []string{"abcdefgh", "x"}, "abcdefghx x", M + "x " + M},
		{"short 5 bytes", []string{"ab:cd"}, "k=ab:cd ab:cdx", "k=" + M + " ab:cdx"},
		{"six bytes is long", []string{"abcdef"}, "xabcdefx", "x" + M + "x"},
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
			if got := r.Contains(tt.in); got != (tt.want != tt.in) {
				t.Errorf("Contains(%q) = %v, want %v", tt.in, got, !got)
			}
			for _, sizes := range [][]int{{1}, {2, 3}, {1000}} {
				if got := collapse(writeChunked(t, r, tt.in, sizes)); got != tt.want {
					t.Errorf("Writer(%q) in chunks %v = %q, want %q", tt.in, sizes, got, tt.want)
				}
			}
			if want, _ := reference(tt.in, tt.secrets); want != tt.want {
				t.Errorf("the fuzz reference disagrees: %q", want)
			}
		})
	}
}

func TestRedactor_NilAndShort(t *testing.T) {
	var r *Redactor
	if got := r.String("x"); got != "x" {
		t.Errorf("nil Redactor changed input: %q", got)
	}
	if r.Contains("x") || r.Len() != 0 || r.Short() != 0 {
		t.Error("nil Redactor reports secrets")
	}
	r = New("abc", "abcdef", "", "abc", "abcde")
	if r.Len() != 3 || r.Short() != 2 {
		t.Errorf("Len=%d Short=%d, want 3 and 2", r.Len(), r.Short())
	}
	if !r.With("zz").Contains("a zz b") || r.Contains("a zz b") {
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
	f.Add("proxy:\n  host: 'x.example'\nPASSWORD=x --pw x", "x", "", uint8(4))
	f.Add("a.b-c d.-e_f", "b", "e", uint8(1))
	f.Add("ab abcdef abcdefg", "ab", "abcdef", uint8(2))
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
