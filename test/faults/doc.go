// Package faults is dister's fault harness: real servers in containers
// (the repository's FROM scratch image), a workload through REST from the
// host, faults injected with docker (kill -9 and restart from the same
// volume, pause of the leader, partitions by disconnecting the Raft
// network, rolling restarts), and checkers over the recorded history:
// linearizability of registers with porcupine, session reads, watches,
// and acknowledged writes after every server restarted.
//
// It has tests only and runs with DISTER_FAULTS=1 where a docker daemon
// answers (skipped otherwise):
//
//	DISTER_FAULTS=1 go test -count=1 -v ./test/faults                        # short: two rounds of each fault
//	DISTER_FAULTS=1 go test -count=1 -v -timeout 0 ./test/faults -rounds 200 # long, prints the summary
//
// -nodes 5 runs five servers, -seed repeats a run's fault choices, and
// -faults.dir keeps its logs, histories and visualizations in a directory
// of your choice (by default a temporary one, kept only on failure).
package faults
