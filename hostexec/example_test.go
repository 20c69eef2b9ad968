package hostexec_test

import (
	"fmt"

	"github.com/capstan-dev/capstan/hostexec"
)

func ExampleQuote() {
	fmt.Println(hostexec.Quote([]string{"docker", "run", "--env", "GREETING=it's $HOME", "app:v1", ""}))
	// Output: docker run --env 'GREETING=it'\''s $HOME' app:v1 ''
}

func ExampleExitError() {
	err := error(&hostexec.ExitError{
		Host:   "root@10.0.0.5:22",
		Argv:   []string{"docker", "pull", "app:v9"},
		Code:   1,
		Stderr: []byte("Error response from daemon: manifest unknown\n"),
	})
	fmt.Println(err)
	// Output: root@10.0.0.5:22: docker exited with status 1: Error response from daemon: manifest unknown
}
