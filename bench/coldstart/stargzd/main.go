// stargzd serves stargz-snapshotter as a containerd proxy snapshotter, for bench/coldstart's
// `stargz` row: the comparison point of issue 18, measured side by side with lazypull.
//
// Debian ships stargz-snapshotter's library (golang-github-containerd-stargz-snapshotter-dev)
// but not its daemon, containerd-stargz-grpc (it needs k8s.io/cri-api, which Debian lacks).
// This is our own small main that does what that daemon does with its default configuration:
// it builds the snapshotter with the library's service.NewStargzSnapshotterService (the same
// constructor containerd-stargz-grpc calls, with the same docker-config keychain) and serves
// containerd's Snapshots gRPC API on a unix socket. build.sh generates the one cri-api package
// the library imports from our own CRI proto and builds this in GOPATH mode, offline.
//
//	lazypull-bench-stargzd --root DIR --address SOCK [--config FILE] [--log-level info]
//
// The config file has containerd-stargz-grpc's format (service.Config: the filesystem keys,
// [blob], [directory_cache], [fuse] and [resolver]); it is decoded with go-toml v1 as upstream
// does, so unset keys get the same defaults (e.g. directory_cache.direct = true). Features that
// need packages Debian does not ship (kubeconfig and CRI keychains, IPFS, the bbolt metadata
// store, the metrics and debug listeners) are rejected with an error rather than ignored.
//
// Differences from containerd-stargz-grpc, on purpose: SIGTERM as well as SIGINT unmounts every
// layer and closes the snapshotter before exiting (a bench trial's root is thrown away after it,
// so nothing is left to resume).
package main

import (
	"context"
	"flag"
	"fmt"
	golog "log"
	"net"
	"os"
	"os/signal"
	"path/filepath"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/log"
	"github.com/containerd/stargz-snapshotter/service"
	"github.com/containerd/stargz-snapshotter/service/keychain/dockerconfig"
	"github.com/containerd/stargz-snapshotter/service/resolver"
	"github.com/pelletier/go-toml"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// daemonConfig is containerd-stargz-grpc's config file layout: service.Config plus the
// daemon-level keys, kept here so that a file enabling one of them fails loudly.
type daemonConfig struct {
	service.Config

	MetricsAddress string `toml:"metrics_address"`
	NoPrometheus   bool   `toml:"no_prometheus"`
	DebugAddress   string `toml:"debug_address"`
	IPFS           bool   `toml:"ipfs"`
	MetadataStore  string `toml:"metadata_store" default:"memory"`
}

func main() {
	address := flag.String("address", "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock",
		"unix socket for the snapshotter's gRPC server")
	configPath := flag.String("config", "", "containerd-stargz-grpc config file (none: defaults)")
	logLevel := flag.String("log-level", logrus.InfoLevel.String(),
		"log level [trace, debug, info, warn, error, fatal, panic]")
	root := flag.String("root", "/var/lib/containerd-stargz-grpc", "snapshotter root directory")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "stargzd: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if err := run(*address, *configPath, *logLevel, *root); err != nil {
		fmt.Fprintf(os.Stderr, "stargzd: %v\n", err)
		os.Exit(1)
	}
}

func run(address, configPath, logLevel, root string) error {
	lvl, err := logrus.ParseLevel(logLevel)
	if err != nil {
		return fmt.Errorf("--log-level %q: %w", logLevel, err)
	}
	logrus.SetLevel(lvl)
	logrus.SetFormatter(&logrus.JSONFormatter{TimestampFormat: log.RFC3339NanoFixed})
	ctx := log.WithLogger(context.Background(), log.L)
	// go-fuse logs through the standard library's logger; upstream sends it to debug level.
	golog.SetOutput(log.G(ctx).WriterLevel(logrus.DebugLevel))

	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	log.G(ctx).WithField("config", fmt.Sprintf("%+v", *cfg)).Debug("effective configuration")
	if err := service.Supported(root); err != nil {
		return fmt.Errorf("snapshotter not supported at %s: %w", root, err)
	}
	// The keychain containerd-stargz-grpc always installs: credentials from the docker config.
	creds := []resolver.Credential{dockerconfig.NewDockerconfigKeychain(ctx)}
	sn, err := service.NewStargzSnapshotterService(ctx, root, &cfg.Config,
		service.WithCredsFuncs(creds...))
	if err != nil {
		return fmt.Errorf("configure snapshotter: %w", err)
	}
	defer func() {
		if err := sn.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("closing the snapshotter")
		}
	}()

	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	if err := os.RemoveAll(address); err != nil {
		return fmt.Errorf("remove stale socket %s: %w", address, err)
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", address, err)
	}
	errCh := make(chan error, 1)
	go func() { errCh <- rpc.Serve(l) }()
	log.G(ctx).WithField("address", address).Info("serving")

	sigCh := make(chan os.Signal, 1)
	signal.Notify(sigCh, unix.SIGINT, unix.SIGTERM)
	select {
	case s := <-sigCh:
		log.G(ctx).Infof("got %v, unmounting and exiting", s)
		rpc.Stop()
		return nil
	case err := <-errCh:
		return fmt.Errorf("serve on %s: %w", address, err)
	}
}

// loadConfig decodes the config file as containerd-stargz-grpc does (go-toml v1, whose decoder
// applies `default` struct tags), from an empty document when there is no file.
func loadConfig(path string) (*daemonConfig, error) {
	var tree *toml.Tree
	var err error
	if path == "" {
		tree, err = toml.Load("")
	} else {
		tree, err = toml.LoadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("load config %q: %w", path, err)
	}
	cfg := &daemonConfig{}
	if err := tree.Unmarshal(cfg); err != nil {
		return nil, fmt.Errorf("decode config %q: %w", path, err)
	}
	switch {
	case cfg.KubeconfigKeychainConfig.EnableKeychain:
		return nil, fmt.Errorf("config %q: kubeconfig_keychain is not built in (Debian has no k8s client-go)", path)
	case cfg.CRIKeychainConfig.EnableKeychain:
		return nil, fmt.Errorf("config %q: cri_keychain is not built in", path)
	case cfg.IPFS:
		return nil, fmt.Errorf("config %q: ipfs is not built in", path)
	case cfg.MetadataStore != "memory":
		return nil, fmt.Errorf("config %q: metadata_store %q is not built in (only \"memory\", the default)", path, cfg.MetadataStore)
	case cfg.MetricsAddress != "" || cfg.DebugAddress != "":
		return nil, fmt.Errorf("config %q: metrics_address and debug_address are not built in", path)
	}
	return cfg, nil
}
