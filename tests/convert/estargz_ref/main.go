// estargz_ref: drives the reference eStargz implementation (Debian's
// github.com/containerd/stargz-snapshotter/estargz) for lazypull's interop tests.
//
//	estargz_ref build TAR OUT [CHUNKSIZE]   writes an eStargz blob with estargz.Build;
//	                                        prints "<toc digest> <diff id>"
//	estargz_ref verify BLOB TOCDIGEST       opens BLOB, checks the TOC digest and every
//	                                        chunk digest of every regular file; prints
//	                                        one line per file: "<name>\t<size>\t<sha256>"
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "estargz_ref: "+format+"\n", args...)
	os.Exit(1)
}

func build(tarPath, outPath string, chunkSize int) {
	f, err := os.Open(tarPath)
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fail("%v", err)
	}
	opts := []estargz.Option{}
	if chunkSize > 0 {
		opts = append(opts, estargz.WithChunkSize(chunkSize))
	}
	blob, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()), opts...)
	if err != nil {
		fail("build: %v", err)
	}
	out, err := os.Create(outPath)
	if err != nil {
		fail("%v", err)
	}
	if _, err := io.Copy(out, blob); err != nil {
		fail("write: %v", err)
	}
	blob.Close()
	out.Close()
	fmt.Printf("%s %s\n", blob.TOCDigest(), blob.DiffID())
}

func verify(blobPath, tocDigest string) {
	f, err := os.Open(blobPath)
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fail("%v", err)
	}
	r, err := estargz.Open(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		fail("open: %v", err)
	}
	want, err := digest.Parse(tocDigest)
	if err != nil {
		fail("bad digest %q: %v", tocDigest, err)
	}
	v, err := r.VerifyTOC(want)
	if err != nil {
		fail("VerifyTOC: %v", err)
	}
	root, ok := r.Lookup("")
	if !ok {
		fail("no root entry")
	}
	var lines []string
	var walk func(dir string, e *estargz.TOCEntry)
	walk = func(dir string, e *estargz.TOCEntry) {
		e.ForeachChild(func(base string, child *estargz.TOCEntry) bool {
			name := base
			if dir != "" {
				name = dir + "/" + base
			}
			if child.Type == "dir" {
				walk(name, child)
				return true
			}
			if child.Type != "reg" {
				return true
			}
			// Every chunk must pass the verifier.
			for off := int64(0); off < child.Size; {
				ce, ok := r.ChunkEntryForOffset(name, off)
				if !ok {
					fail("%s: no chunk at %d", name, off)
				}
				cv, err := v.Verifier(ce)
				if err != nil {
					fail("%s: verifier at %d: %v", name, off, err)
				}
				sr, err := r.OpenFile(name)
				if err != nil {
					fail("%s: %v", name, err)
				}
				if _, err := io.Copy(cv, io.NewSectionReader(sr, ce.ChunkOffset, ce.ChunkSize)); err != nil {
					fail("%s: read chunk: %v", name, err)
				}
				if !cv.Verified() {
					fail("%s: chunk at %d does not match its chunkDigest", name, off)
				}
				off = ce.ChunkOffset + ce.ChunkSize
			}
			sr, err := r.OpenFile(name)
			if err != nil {
				fail("%s: %v", name, err)
			}
			h := sha256.New()
			if _, err := io.Copy(h, sr); err != nil {
				fail("%s: read: %v", name, err)
			}
			lines = append(lines, fmt.Sprintf("%s\t%d\t%x", name, child.Size, h.Sum(nil)))
			return true
		})
	}
	walk("", root)
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
}

func main() {
	if len(os.Args) < 4 {
		fail("usage: estargz_ref build TAR OUT [CHUNKSIZE] | verify BLOB TOCDIGEST")
	}
	switch os.Args[1] {
	case "build":
		chunk := 0
		if len(os.Args) > 4 {
			n, err := strconv.Atoi(os.Args[4])
			if err != nil {
				fail("bad chunk size: %v", err)
			}
			chunk = n
		}
		build(os.Args[2], os.Args[3], chunk)
	case "verify":
		verify(os.Args[2], os.Args[3])
	default:
		fail("unknown command %q", os.Args[1])
	}
}
