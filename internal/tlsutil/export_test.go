package tlsutil

import "time"

// Recheck makes the next handshake look at the files at once.
func Recheck(s *Source) {
	s.mu.Lock()
	s.checked = time.Time{}
	s.mu.Unlock()
}
