package errs

import "strconv"

// MaxEchoed bounds a key, name or address echoed in an error message.
const MaxEchoed = 200

// Cut is s cut to MaxEchoed bytes ("..." when cut), for a name an error
// message shows as it is: a 4 KiB key or a 1 MiB tag would drown the
// message and every log line that repeats it.
func Cut(s string) string {
	if len(s) <= MaxEchoed {
		return s
	}
	return s[:MaxEchoed] + "..."
}

// Quote is s quoted and cut as Cut cuts it ("..." after the quote).
func Quote(s string) string {
	if len(s) <= MaxEchoed {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:MaxEchoed]) + "..."
}
