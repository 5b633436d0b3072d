package testcluster

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestFreeAddrAcrossProcesses: test packages run as parallel processes, and
// two of them once got the same port ("address already in use"). Ports
// claimed by another live process are never handed out here.
func TestFreeAddrAcrossProcesses(t *testing.T) {
	if os.Getenv("DISTER_FREEADDR_CHILD") == "1" {
		for range 200 {
			fmt.Println(FreeAddr(t))
		}
		fmt.Println("done")
		// Hold the claims until the parent has made its own.
		bufio.NewReader(os.Stdin).ReadString('\n')
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestFreeAddrAcrossProcesses$")
	cmd.Env = append(os.Environ(), "DISTER_FREEADDR_CHILD=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "done" {
		child[strings.TrimSpace(sc.Text())] = true
	}
	if len(child) != 200 {
		t.Fatalf("child claimed %d distinct ports, want 200", len(child))
	}
	mine := map[string]bool{}
	for range 200 {
		a := FreeAddr(t)
		if child[a] || mine[a] {
			t.Fatalf("port %s handed out twice", a)
		}
		mine[a] = true
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}
