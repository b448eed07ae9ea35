// go_login: the leaky login server of the scenario, in Go. Each
// connection sends "LOGIN <name>\n", gets "OK\n", then logs out by
// closing its side; the server closes the connection at EOF. Every login
// leaks one UDP socket in newMetrics (net.ListenUDP, never closed), on a
// goroutine of its own. "QUIT\n" ends the server.
//
//	EXPECT listen port=N
//	EXPECT leak fd=N syscall=socket site=main.go:LINE fn=main.newMetrics
//
// usage: go_login
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

var (
	mu      sync.Mutex
	metrics []*net.UDPConn
)

func expect(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "EXPECT "+format+"\n", args...)
}

// newMetrics opens the statsd socket of a login and keeps it forever.
func newMetrics() {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); _, file, line, _ := runtime.Caller(0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ListenUDP:", err)
		os.Exit(2)
	}
	raw, _ := conn.SyscallConn()
	fd := -1
	_ = raw.Control(func(f uintptr) { fd = int(f) })
	mu.Lock()
	metrics = append(metrics, conn)
	mu.Unlock()
	expect("leak fd=%d syscall=socket site=%s:%d fn=main.newMetrics", fd, filepath.Base(file), line)
}

func serve(conn net.Conn) {
	defer conn.Close()
	reader := bufio.NewReader(conn)
	line, err := reader.ReadString('\n')
	if err != nil {
		return
	}
	line = strings.TrimSpace(line)
	switch {
	case strings.HasPrefix(line, "LOGIN "):
		newMetrics()
		conn.Write([]byte("OK\n"))
		buf := make([]byte, 256)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
		}
	case line == "QUIT":
		os.Exit(0)
	}
}

func main() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(2)
	}
	expect("listen port=%d", listener.Addr().(*net.TCPAddr).Port)
	for {
		conn, err := listener.Accept()
		if err != nil {
			os.Exit(2)
		}
		go serve(conn)
	}
}
