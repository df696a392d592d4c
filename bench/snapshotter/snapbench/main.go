// snapbench measures Prepare+Mounts+Commit+Remove latency of snapshotters, the way containerd
// clients see it, and prints each target's latency as a ratio to a baseline measured in the same
// run, interleaved round-robin so drift (other load, GC) hits every target alike.
//
// Targets:
//
//	containerd:NAME        containerd's Snapshots service on -address with snapshotter NAME
//	                       (its metadata layer, GC and the proxy hop included)
//	direct:NAME=SOCKET     a proxy snapshotter's own socket (no containerd in between)
//
// Each iteration: Prepare(key, parent=base) → Mounts(key) → Commit(name, key) → Remove(name),
// where base is a committed snapshot holding one file, made once per target.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/leases"
	leasesproxy "github.com/containerd/containerd/leases/proxy"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

var ops = []string{"prepare", "mounts", "commit", "remove", "total"}

type target struct {
	label string
	sn    snapshots.Snapshotter
	base  string
	lat   map[string][]time.Duration
}

func dial(ctx context.Context, socket string) (*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return grpc.DialContext(ctx, "unix://"+socket, grpc.WithInsecure(), grpc.WithBlock())
}

func newTarget(ctx context.Context, spec, containerdAddress string) (*target, error) {
	kind, rest, ok := strings.Cut(spec, ":")
	if !ok {
		return nil, fmt.Errorf("target %q: want containerd:NAME or direct:NAME=SOCKET", spec)
	}
	var socket, name string
	switch kind {
	case "containerd":
		socket, name = containerdAddress, rest
	case "direct":
		name, socket, ok = strings.Cut(rest, "=")
		if !ok {
			return nil, fmt.Errorf("target %q: want direct:NAME=SOCKET", spec)
		}
	default:
		return nil, fmt.Errorf("target %q: unknown kind %q", spec, kind)
	}
	conn, err := dial(ctx, socket)
	if err != nil {
		return nil, fmt.Errorf("target %q: dial %s: %v", spec, socket, err)
	}
	t := &target{label: kind + ":" + name,
		sn:  proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), name),
		lat: map[string][]time.Duration{}}
	return t, nil
}

// setup makes the committed parent every iteration prepares on top of.
func (t *target) setup(ctx context.Context, run string) error {
	t.base = "snapbench-base-" + run
	gcRoot := snapshots.WithLabels(map[string]string{"containerd.io/gc.root": run})
	key := t.base + "-active"
	mounts, err := t.sn.Prepare(ctx, key, "", gcRoot)
	if err != nil {
		return fmt.Errorf("%s: prepare base: %v", t.label, err)
	}
	dir, err := os.MkdirTemp("", "snapbench-mnt-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := mount.All(mounts, dir); err != nil {
		return fmt.Errorf("%s: mount base: %v", t.label, err)
	}
	werr := os.WriteFile(dir+"/base.txt", []byte("base layer\n"), 0o644)
	if err := mount.UnmountAll(dir, 0); err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	return t.sn.Commit(ctx, t.base, key, gcRoot)
}

func (t *target) iterate(ctx context.Context, i int) error {
	key := fmt.Sprintf("snapbench-%d-active", i)
	name := fmt.Sprintf("snapbench-%d", i)
	start := time.Now()
	if _, err := t.sn.Prepare(ctx, key, t.base); err != nil {
		return fmt.Errorf("%s: prepare: %v", t.label, err)
	}
	t1 := time.Now()
	m, err := t.sn.Mounts(ctx, key)
	if err != nil || len(m) == 0 {
		return fmt.Errorf("%s: mounts: %v (%d mounts)", t.label, err, len(m))
	}
	t2 := time.Now()
	if err := t.sn.Commit(ctx, name, key); err != nil {
		return fmt.Errorf("%s: commit: %v", t.label, err)
	}
	t3 := time.Now()
	if err := t.sn.Remove(ctx, name); err != nil {
		return fmt.Errorf("%s: remove: %v", t.label, err)
	}
	t4 := time.Now()
	for op, d := range map[string]time.Duration{"prepare": t1.Sub(start), "mounts": t2.Sub(t1),
		"commit": t3.Sub(t2), "remove": t4.Sub(t3), "total": t4.Sub(start)} {
		t.lat[op] = append(t.lat[op], d)
	}
	return nil
}

func quantile(ds []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	return s[int(q*float64(len(s)-1)+0.5)]
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func main() {
	address := flag.String("address", "", "containerd gRPC socket (for containerd:NAME targets)")
	targetsFlag := flag.String("targets", "containerd:lazypull,containerd:overlayfs",
		"comma-separated targets (containerd:NAME | direct:NAME=SOCKET)")
	baseline := flag.String("baseline", "containerd:overlayfs", "target the ratios are against")
	iterations := flag.Int("n", 300, "measured iterations per target")
	warmup := flag.Int("warmup", 30, "unmeasured iterations per target")
	ns := flag.String("namespace", "snapbench", "containerd namespace")
	maxRatio := flag.Float64("max-ratio", 0, "exit 1 if a containerd: target's median total "+
		"exceeds this ratio to the baseline (0 = report only)")
	jsonOut := flag.String("json", "", "also write results as JSON to this file")
	flag.Parse()

	ctx := namespaces.WithNamespace(context.Background(), *ns)
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	if *address != "" {
		// Like every containerd client: hold a lease, else containerd's GC may collect a
		// just-committed snapshot before the Remove that the iteration measures.
		conn, err := dial(ctx, *address)
		if err != nil {
			fmt.Fprintln(os.Stderr, "snapbench: dial containerd:", err)
			os.Exit(2)
		}
		lm := leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(conn))
		lease, err := lm.Create(ctx, leases.WithID("snapbench-"+run), leases.WithExpiration(time.Hour))
		if err != nil {
			fmt.Fprintln(os.Stderr, "snapbench: create lease:", err)
			os.Exit(2)
		}
		defer lm.Delete(context.Background(), lease)
		ctx = leases.WithLease(ctx, lease.ID)
	}
	var targets []*target
	for _, spec := range strings.Split(*targetsFlag, ",") {
		t, err := newTarget(ctx, spec, *address)
		if err == nil {
			err = t.setup(ctx, run)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "snapbench:", err)
			os.Exit(2)
		}
		targets = append(targets, t)
	}
	for i := 0; i < *warmup+*iterations; i++ {
		for j := range targets {
			t := targets[(i+j)%len(targets)] // rotate who goes first
			if err := t.iterate(ctx, i); err != nil {
				fmt.Fprintln(os.Stderr, "snapbench:", err)
				os.Exit(2)
			}
			if i == *warmup-1 && j == len(targets)-1 {
				for _, t := range targets {
					t.lat = map[string][]time.Duration{}
				}
			}
		}
	}

	var base *target
	for _, t := range targets {
		if t.label == *baseline {
			base = t
		}
	}
	fmt.Printf("snapbench: %d iterations per target (after %d warm-up), median / p90 in µs\n",
		*iterations, *warmup)
	fmt.Printf("%-24s", "target")
	for _, op := range ops {
		fmt.Printf(" %19s", op)
	}
	fmt.Printf(" %9s\n", "ratio")
	type row struct {
		Target string             `json:"target"`
		Median map[string]float64 `json:"median_us"`
		P90    map[string]float64 `json:"p90_us"`
		Ratio  float64            `json:"ratio_median_total"`
	}
	var rows []row
	failed := false
	for _, t := range targets {
		r := row{Target: t.label, Median: map[string]float64{}, P90: map[string]float64{}}
		fmt.Printf("%-24s", t.label)
		for _, op := range ops {
			r.Median[op], r.P90[op] = us(quantile(t.lat[op], 0.5)), us(quantile(t.lat[op], 0.9))
			fmt.Printf(" %9.0f / %7.0f", r.Median[op], r.P90[op])
		}
		if base != nil {
			r.Ratio = r.Median["total"] / us(quantile(base.lat["total"], 0.5))
			fmt.Printf(" %8.2fx", r.Ratio)
			if *maxRatio > 0 && strings.HasPrefix(t.label, "containerd:") && r.Ratio > *maxRatio {
				failed = true
			}
		}
		fmt.Println()
		rows = append(rows, r)
	}
	if base != nil {
		for _, r := range rows {
			if r.Target != *baseline {
				fmt.Printf("RATIO %s / %s = %.3f (median Prepare+Mounts+Commit+Remove)\n",
					r.Target, *baseline, r.Ratio)
			}
		}
	}
	// Walk and Cleanup are what containerd's GC calls on a backend while it holds that
	// snapshotter's lock, so their cost shows up as Prepare/Commit latency through containerd.
	fmt.Printf("\n%-24s %19s %19s   (backend holds 1 base + GC leftovers; median / p90 in µs)\n",
		"target", "walk", "cleanup")
	for _, t := range targets {
		var walks, cleanups []time.Duration
		for i := 0; i < 20; i++ {
			start := time.Now()
			if err := t.sn.Walk(ctx, func(context.Context, snapshots.Info) error { return nil }); err != nil {
				fmt.Fprintf(os.Stderr, "snapbench: %s: walk: %v\n", t.label, err)
				break
			}
			walks = append(walks, time.Since(start))
			// containerd's own Snapshots service answers Cleanup with Unimplemented.
			if c, ok := t.sn.(snapshots.Cleaner); ok && strings.HasPrefix(t.label, "direct:") {
				start = time.Now()
				if err := c.Cleanup(ctx); err != nil {
					fmt.Fprintf(os.Stderr, "snapbench: %s: cleanup: %v\n", t.label, err)
					break
				}
				cleanups = append(cleanups, time.Since(start))
			}
		}
		fmt.Printf("%-24s", t.label)
		for _, ds := range [][]time.Duration{walks, cleanups} {
			if len(ds) == 0 {
				fmt.Printf(" %19s", "-")
			} else {
				fmt.Printf(" %9.0f / %7.0f", us(quantile(ds, 0.5)), us(quantile(ds, 0.9)))
			}
		}
		fmt.Println()
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rows, "", "  ")
		_ = os.WriteFile(*jsonOut, b, 0o644)
	}
	// Leave nothing behind: the bases are gc roots.
	for _, t := range targets {
		_ = t.sn.Remove(ctx, t.base)
	}
	if failed {
		fmt.Fprintf(os.Stderr, "snapbench: ratio above %.2f\n", *maxRatio)
		os.Exit(1) //nolint: the lease expires on its own
	}
}
