// estargz_gen: converts a tar into an eStargz blob with the reference Go implementation
// (Debian's github.com/containerd/stargz-snapshotter/estargz), for interoperability tests.
//
// Usage: estargz_gen IN.tar OUT.blob [chunkSize] [prioritized,files,...]
// Prints "<toc digest> <diff id>" on stdout.
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: estargz_gen IN.tar OUT.blob [chunkSize] [prioritized,...]")
		os.Exit(2)
	}
	in, err := os.Open(os.Args[1])
	if err != nil {
		fail(err)
	}
	st, err := in.Stat()
	if err != nil {
		fail(err)
	}
	var opts []estargz.Option
	if len(os.Args) > 3 && os.Args[3] != "" {
		n, err := strconv.Atoi(os.Args[3])
		if err != nil {
			fail(err)
		}
		opts = append(opts, estargz.WithChunkSize(n))
	}
	if len(os.Args) > 4 && os.Args[4] != "" {
		opts = append(opts, estargz.WithPrioritizedFiles(strings.Split(os.Args[4], ",")))
	}
	blob, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()), opts...)
	if err != nil {
		fail(err)
	}
	defer blob.Close()
	out, err := os.Create(os.Args[2])
	if err != nil {
		fail(err)
	}
	if _, err := io.Copy(out, blob); err != nil {
		fail(err)
	}
	if err := out.Close(); err != nil {
		fail(err)
	}
	fmt.Printf("%s %s\n", blob.TOCDigest(), blob.DiffID())
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "estargz_gen:", err)
	os.Exit(1)
}
