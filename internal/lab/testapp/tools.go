package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/term"
)

// init runs a tool and exits when the arguments name one, before main
// starts the server.
func init() {
	if len(os.Args) > 1 {
		if code, ok := tool(os.Args[1:]); ok {
			os.Exit(code)
		}
	}
}

// tool runs testapp as a one-off command when it has arguments (the
// lab's images are FROM scratch: there is no shell), for `capstan exec`
// tests. It reports whether args named a tool.
//
//	testapp env NAME…   print each variable's value, one per line ("" if unset)
//	testapp exit N      exit with status N
//	testapp cat FILE…   print the files (an image's /release)
//	testapp tty         print "tty yes|no" and "size COLSxROWS" of stdin, then
//	                    for each line read print "got LINE" and the size again;
//	                    "quit" exits 0, SIGINT prints "interrupted" and exits 130
func tool(args []string) (int, bool) {
	switch args[0] {
	case "env":
		for _, n := range args[1:] {
			fmt.Println(os.Getenv(n))
		}
		return 0, true
	case "exit":
		n, err := strconv.Atoi(args[len(args)-1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "testapp exit: want a number")
			return 2, true
		}
		return n, true
	case "tty":
		return ttyTool(), true
	case "cat":
		for _, f := range args[1:] {
			b, err := os.ReadFile(f)
			if err != nil {
				fmt.Fprintln(os.Stderr, "testapp cat:", err)
				return 1, true
			}
			os.Stdout.Write(b)
		}
		return 0, true
	}
	return 0, false
}

func ttyTool() int {
	fd := int(os.Stdin.Fd())
	size := func() string {
		w, h, err := term.GetSize(fd)
		if err != nil {
			return "none"
		}
		return fmt.Sprintf("%dx%d", w, h)
	}
	isTTY := "no"
	if term.IsTerminal(fd) {
		isTTY = "yes"
	}
	fmt.Printf("tty %s\nsize %s\n", isTTY, size())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case <-sig:
			fmt.Println("interrupted")
			return 130
		case l, ok := <-lines:
			if !ok || l == "quit" {
				fmt.Println("bye")
				return 0
			}
			fmt.Printf("got %s\nsize %s\n", l, size())
		}
	}
}
