package health

import "testing"

func TestDamper(t *testing.T) {
	d := NewDamper(0)
	if d.n != DefaultDamping {
		t.Fatalf("default n = %d", d.n)
	}
	steps := []struct {
		in      Status
		changed bool
		cur     Status
	}{
		{Passing, true, Passing}, // first result adopted at once
		{Passing, false, Passing},
		{Critical, false, Passing}, // one blip is absorbed
		{Passing, false, Passing},
		{Critical, false, Passing},
		{Warning, false, Passing}, // streak broken by a different status
		{Warning, true, Warning},
		{Critical, false, Warning},
		{Critical, true, Critical},
		{Critical, false, Critical},
	}
	for i, s := range steps {
		changed, cur := d.Observe(s.in)
		if changed != s.changed || cur != s.cur {
			t.Fatalf("step %d Observe(%v) = %v, %v; want %v, %v", i, s.in, changed, cur, s.changed, s.cur)
		}
	}
	if d.Current() != Critical {
		t.Fatalf("Current = %v", d.Current())
	}
}

func TestDamperN(t *testing.T) {
	d := NewDamper(3)
	d.Observe(Critical)
	for i, want := range []bool{false, false, true} {
		if changed, _ := d.Observe(Passing); changed != want {
			t.Fatalf("observation %d: changed = %v", i, changed)
		}
	}
	one := NewDamper(1)
	one.Observe(Passing)
	if changed, cur := one.Observe(Critical); !changed || cur != Critical {
		t.Fatal("n=1 must not damp")
	}
}
