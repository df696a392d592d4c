// cripull pulls and unpacks an image into a snapshotter exactly as containerd's CRI plugin does
// (containerd client Pull + WithPullUnpack + snapshotters.AppendInfoHandlerWrapper), so the
// snapshotter's Prepare sees containerd.io/snapshot.ref and the containerd.io/snapshot/cri.*
// labels that `ctr images pull` never sends. Used by tests to trigger remote (lazy) snapshots.
//
//	lazypull-cripull --address SOCK --namespace NS --snapshotter lazypull [--plain-http] REF
//
// Prints "unpacked <image name> <manifest digest>" on success; errors go to stderr, exit 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/snapshotters"
	"github.com/containerd/containerd/remotes/docker"
)

func main() {
	address := flag.String("address", "/run/containerd/containerd.sock", "containerd socket")
	ns := flag.String("namespace", "default", "containerd namespace")
	snapshotter := flag.String("snapshotter", "lazypull", "snapshotter to unpack into")
	plainHTTP := flag.Bool("plain-http", false, "talk HTTP to the registry")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: lazypull-cripull [flags] REF")
		os.Exit(2)
	}
	ref := flag.Arg(0)

	client, err := containerd.New(*address, containerd.WithDefaultNamespace(*ns))
	if err != nil {
		fmt.Fprintf(os.Stderr, "cripull: connect %s: %v\n", *address, err)
		os.Exit(1)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), *ns), *timeout)
	defer cancel()

	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(func(string) (bool, error) {
			return *plainHTTP, nil
		})),
	})
	img, err := client.Pull(ctx, ref,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(*snapshotter),
		containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)),
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cripull: pull %s into %s: %v\n", ref, *snapshotter, err)
		os.Exit(1)
	}
	fmt.Printf("unpacked %s %s\n", img.Name(), img.Target().Digest)
}
