// Runs containerd's own snapshotter conformance suite (snapshots/testsuite, shipped by Debian's
// golang-github-containerd-containerd-dev) against the lazypull-snapshotter daemon, talking to it
// exactly as containerd does: the snapshots proxy over its real gRPC unix socket.
//
// Every case gets a fresh daemon on a fresh root. The daemon binary comes from
// $LAZYPULL_SNAPSHOTTER_BIN. With LAZYPULL_CONFORMANCE_REFERENCE=1 the same plumbing serves
// containerd's built-in overlayfs snapshotter instead (in-process gRPC server), which checks the
// harness itself and shows what the suite expects.
package conformance

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/pkg/testutil"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/overlay"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

const snapshotterName = "lazypull"

func dial(ctx context.Context, socket string) (*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return grpc.DialContext(ctx, "unix://"+socket,
		grpc.WithInsecure(), grpc.WithBlock())
}

// startDaemon starts lazypull-snapshotter on `root` and returns a proxy snapshotter over its
// socket plus a cleanup that closes the connection and stops the daemon by PID (SIGTERM, then
// SIGKILL after 10 s). A non-zero exit after SIGTERM is reported as a cleanup error.
func startDaemon(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	bin := os.Getenv("LAZYPULL_SNAPSHOTTER_BIN")
	if bin == "" {
		return nil, nil, fmt.Errorf("LAZYPULL_SNAPSHOTTER_BIN is not set")
	}
	// root is <tmp>/root; the daemon's own root and socket live below it.
	daemonRoot := filepath.Join(root, "lazypull")
	socket := filepath.Join(root, "lazypull.sock")
	logPath := filepath.Join(filepath.Dir(root), "daemon.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	// No metrics endpoint: parallel tests would compete for its default port.
	cmd := exec.Command(bin, "--root", daemonRoot, "--address", socket, "--log-level", "debug",
		"--metrics-address", "")
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	dumpLog := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	fail := func(err error) (snapshots.Snapshotter, func() error, error) {
		_ = cmd.Process.Kill()
		<-exited
		logFile.Close()
		return nil, nil, fmt.Errorf("%v; daemon log:\n%s", err, dumpLog())
	}
	// Wait for the socket to accept connections (or the daemon to die).
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			exited <- err
			return fail(fmt.Errorf("daemon exited before serving: %v", err))
		default:
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("daemon socket %s not ready after 20s", socket))
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := dial(ctx, socket)
	if err != nil {
		return fail(err)
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), snapshotterName)
	cleanup := func() error {
		conn.Close()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		var werr error
		select {
		case werr = <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			werr = fmt.Errorf("daemon did not exit within 10s of SIGTERM")
		}
		logFile.Close()
		if werr != nil {
			return fmt.Errorf("daemon stop: %v; daemon log:\n%s", werr, dumpLog())
		}
		return nil
	}
	return sn, cleanup, nil
}

// startReference serves containerd's overlayfs snapshotter through the same proxy plumbing.
func startReference(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	backend, err := overlay.NewSnapshotter(filepath.Join(root, "overlay"))
	if err != nil {
		return nil, nil, err
	}
	socket := filepath.Join(root, "reference.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, nil, err
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(backend))
	go srv.Serve(l)
	conn, err := dial(ctx, socket)
	if err != nil {
		srv.Stop()
		return nil, nil, err
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), snapshotterName)
	return sn, func() error {
		conn.Close()
		srv.GracefulStop()
		return backend.Close()
	}, nil
}

func TestSnapshotterConformance(t *testing.T) {
	testutil.RequiresRoot(t)
	fn := startDaemon
	if os.Getenv("LAZYPULL_CONFORMANCE_REFERENCE") == "1" {
		fn = startReference
	}
	testsuite.SnapshotterSuite(t, snapshotterName, fn)
}
