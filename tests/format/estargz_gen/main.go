// estargz_gen: converts a tar into an eStargz blob with the reference Go implementation
// (Debian's github.com/containerd/stargz-snapshotter/estargz), for interoperability tests.
//
// Usage: estargz_gen IN.tar OUT.blob [chunkSize] [prioritized,files,...] [zstd]
// Prints "<toc digest> <diff id>" on stdout; with "zstd" (stargz-snapshotter's zstd:chunked
// compressor) a second line holds the layer annotations as JSON.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
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
	var zc *zstdchunked.Compressor
	if len(os.Args) > 5 && os.Args[5] == "zstd" {
		zc = &zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault, Metadata: map[string]string{}}
		opts = append(opts, estargz.WithCompression(zstdCompression{zc, &zstdchunked.Decompressor{}}))
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
	if zc != nil {
		a, err := json.Marshal(zc.Metadata)
		if err != nil {
			fail(err)
		}
		fmt.Printf("%s\n", a)
	}
}

// zstdCompression pairs stargz-snapshotter's zstd:chunked compressor and decompressor.
type zstdCompression struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "estargz_gen:", err)
	os.Exit(1)
}
