package erasure

import (
	"errors"
	"testing"
)

func TestParseGeometry(t *testing.T) {
	tests := []struct {
		in      string
		want    Geometry
		wantErr bool
	}{
		{in: "2+1", want: Geometry{Data: 2, Parity: 1}},
		{in: "4+2", want: Geometry{Data: 4, Parity: 2}},
		{in: "1+1", want: Geometry{Data: 1, Parity: 1}},
		{in: "32+32", want: Geometry{Data: 32, Parity: 32}},
		{in: "32+33", wantErr: true},
		{in: "0+2", wantErr: true},
		{in: "2+0", wantErr: true},
		{in: "2", wantErr: true},
		{in: "", wantErr: true},
		{in: "+2+1", wantErr: true},
		{in: "2++1", wantErr: true},
		{in: "-2+1", wantErr: true},
		{in: " 2+1", wantErr: true},
		{in: "2+1 ", wantErr: true},
		{in: "a+b", wantErr: true},
		{in: "01+1", wantErr: true},
		{in: "2+1+1", wantErr: true},
		{in: "99999999999999999999+1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			g, err := ParseGeometry(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidGeometry) {
					t.Fatalf("ParseGeometry(%q) = %v, %v; want ErrInvalidGeometry", tt.in, g, err)
				}
				return
			}
			if err != nil || g != tt.want {
				t.Fatalf("ParseGeometry(%q) = %v, %v; want %v", tt.in, g, err, tt.want)
			}
			if g.String() != tt.in {
				t.Errorf("String() = %q, want %q", g.String(), tt.in)
			}
		})
	}
}

func TestGeometryQuorumAndTotal(t *testing.T) {
	tests := []struct {
		g             Geometry
		total, quorum int
	}{
		{Geometry{2, 1}, 3, 2},
		{Geometry{2, 2}, 4, 3},
		{Geometry{3, 2}, 5, 3},
		{Geometry{4, 2}, 6, 4},
		{Geometry{4, 4}, 8, 5},
		{Geometry{1, 1}, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.g.String(), func(t *testing.T) {
			if got := tt.g.Total(); got != tt.total {
				t.Errorf("Total() = %d, want %d", got, tt.total)
			}
			if got := tt.g.DefaultWriteQuorum(); got != tt.quorum {
				t.Errorf("DefaultWriteQuorum() = %d, want %d", got, tt.quorum)
			}
		})
	}
}

func FuzzParseGeometry(f *testing.F) {
	for _, s := range []string{"2+1", "4+2", "0+0", "64+1", "+", "1+-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGeometry(s)
		if err != nil {
			return
		}
		if g.Validate() != nil || g.String() != s {
			t.Fatalf("ParseGeometry(%q) = %v: invalid or not canonical", s, g)
		}
	})
}
