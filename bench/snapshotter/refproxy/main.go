// refproxy serves containerd's own overlayfs snapshotter (snapshots/overlay, from Debian's
// golang-github-containerd-containerd-dev) as a proxy snapshotter over a unix socket, with the
// same command line as lazypull-snapshotter. It is a yardstick: the benchmark reports lazypull
// against it (the cost of any out-of-process snapshotter) as well as against the built-in
// overlayfs, and the e2e tests can run against it to check the harness
// (LAZYPULL_SNAPSHOTTER_BIN=<build>/bin/lazypull-refproxy).
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"
)

func main() {
	root := flag.String("root", "/var/lib/lazypull-refproxy", "snapshotter root")
	address := flag.String("address", "/run/lazypull-refproxy.sock", "unix socket to serve on")
	flag.String("log-level", "info", "ignored (same flags as lazypull-snapshotter)")
	flag.String("config", "", "ignored (same flags as lazypull-snapshotter)")
	flag.String("metrics-address", "", "ignored (same flags as lazypull-snapshotter)")
	flag.Parse()

	sn, err := overlay.NewSnapshotter(*root)
	if err != nil {
		fmt.Fprintf(os.Stderr, "refproxy: overlay snapshotter on %s: %v\n", *root, err)
		os.Exit(1)
	}
	if err := os.MkdirAll(filepath.Dir(*address), 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "refproxy: %v\n", err)
		os.Exit(1)
	}
	_ = os.Remove(*address)
	l, err := net.Listen("unix", *address)
	if err != nil {
		fmt.Fprintf(os.Stderr, "refproxy: listen %s: %v\n", *address, err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		srv.GracefulStop()
	}()
	if err := srv.Serve(l); err != nil {
		fmt.Fprintf(os.Stderr, "refproxy: serve: %v\n", err)
		os.Exit(1)
	}
	_ = sn.Close()
	_ = os.Remove(*address)
}
