// Package devserver runs a real Temporal server and the Temporal Web UI inside
// the worker process for `workers --dev`: every Temporal service in one
// process, persisted in a SQLite file under the data folder so that workflow
// histories survive a restart. Production uses a Temporal cluster instead.
package devserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uioptions "github.com/temporalio/ui-server/v2/server/server_options"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	tlog "go.temporal.io/server/common/log"
	"go.temporal.io/server/common/membership/static"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/replicator/replicator/internal/freeport"
)

// Options of the embedded server.
type Options struct {
	// DataDir holds temporal.db, the SQLite database.
	DataDir string
	// FrontendAddress is the gRPC address clients dial, e.g. 127.0.0.1:7233.
	FrontendAddress string
	// UIAddress is where the Web UI listens, e.g. 127.0.0.1:8233; empty disables it.
	UIAddress string
	// CodecEndpoint is the codec server the Web UI decodes payloads with
	// (empty: none, payloads are shown as they are stored).
	CodecEndpoint string
	// Namespace is registered at start if missing.
	Namespace string
	// Retention of closed workflow histories in the namespace.
	Retention time.Duration
	// Logger receives the server's warnings and errors.
	Logger *slog.Logger
}

// Server is a running embedded Temporal server.
type Server struct {
	temporal temporal.Server
	ui       *uiserver.Server
	uiErr    chan error
}

const clusterName = "active"

// historyCountSuggestContinueAsNew is the history length at which the
// server tells a workflow it should continue as new
// (limit.historyCount.suggestContinueAsNew).
const historyCountSuggestContinueAsNew = 1000

// Start starts the server and, when asked, the Web UI. It returns when the
// frontend accepts connections.
func Start(o Options) (*Server, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	host, portText, err := net.SplitHostPort(o.FrontendAddress)
	if err != nil {
		return nil, fmt.Errorf("temporal frontend address %q: %w", o.FrontendAddress, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("temporal frontend address %q: bad port", o.FrontendAddress)
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("temporal data folder: %w", err)
	}
	// Fail early and clearly when the port is taken (another dev stack running).
	if ln, err := net.Listen("tcp", o.FrontendAddress); err != nil {
		return nil, fmt.Errorf("temporal frontend %s is not free (is another `workers --dev` running?): %w", o.FrontendAddress, err)
	} else {
		ln.Close()
	}

	conf, err := serverConfig(o, host, port)
	if err != nil {
		return nil, err
	}
	logger := tlog.NewZapLogger(tlog.BuildZapLogger(tlog.Config{Level: "error", Format: "json"}))
	authorizer, err := authorization.GetAuthorizerFromConfig(&conf.Global.Authorization)
	if err != nil {
		return nil, fmt.Errorf("temporal authorizer: %w", err)
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&conf.Global.Authorization, logger)
	if err != nil {
		return nil, fmt.Errorf("temporal claim mapper: %w", err)
	}
	hosts := map[primitives.ServiceName]static.Hosts{}
	for name, svc := range conf.Services {
		hosts[primitives.ServiceName(name)] = static.SingleLocalHost(net.JoinHostPort(host, strconv.Itoa(svc.RPC.GRPCPort)))
	}
	dyn := dynamicconfig.StaticClient{
		dynamicconfig.HistoryCacheHostLevelMaxSize.Key():                 8096,
		dynamicconfig.FrontendMaxNamespaceVisibilityRPSPerInstance.Key(): 100,
		// One partition per task queue (matching.numTaskqueueReadPartitions
		// and WritePartitions, default 4): a task written to a partition
		// whose pollers wait on another one is forwarded late, tens of ms per
		// activity measured here, and one host gains nothing from partitions.
		dynamicconfig.MatchingNumTaskqueueReadPartitions.Key():  1,
		dynamicconfig.MatchingNumTaskqueueWritePartitions.Key(): 1,
		// The history shard's transfer queue, which hands every workflow
		// and activity task to matching, loads new tasks at most
		// history.transferProcessorMaxPollRPS times a second per shard
		// (default 20, service/history/queues/reader_quotas.go). A cluster
		// spreads its executions over hundreds of shards; this server has
		// one, so every dispatch waited for the next of 20 slots a second:
		// 25-40 ms per activity and per workflow task, most of a VM's
		// orchestration time. The reader still loads only when told of new
		// tasks (or once a minute), so a higher limit costs nothing idle.
		dynamicconfig.TransferProcessorMaxPollRPS.Key(): 1000,
		// A Temporal Schedule is a workflow of the server's own that
		// continues as new only when the server suggests it, by default at
		// 4,096 events: a job with rpo 30s runs every 15 s, about 16 events
		// each, and its schedule's history passed 1,700 events in 40
		// minutes. Suggested at 1,000 it stays bounded like every
		// workflow of replicator (the job's run continues as new at 1,000
		// events by itself).
		dynamicconfig.HistoryCountSuggestContinueAsNew.Key(): historyCountSuggestContinueAsNew,
	}
	srv, err := temporal.NewServer(
		temporal.WithConfig(conf),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithStaticHosts(hosts),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(dyn),
	)
	if err != nil {
		return nil, fmt.Errorf("temporal server: %w", err)
	}
	s := &Server{temporal: srv}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("starting temporal server: %w", err)
	}
	if o.UIAddress != "" {
		if err := s.startUI(o); err != nil {
			srv.Stop()
			return nil, err
		}
	}
	return s, nil
}

func (s *Server) startUI(o Options) error {
	host, portText, err := net.SplitHostPort(o.UIAddress)
	if err != nil {
		return fmt.Errorf("web UI address %q: %w", o.UIAddress, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("web UI address %q: bad port", o.UIAddress)
	}
	ln, err := net.Listen("tcp", o.UIAddress)
	if err != nil {
		return fmt.Errorf("web UI %s is not free: %w", o.UIAddress, err)
	}
	ln.Close()
	s.ui = uiserver.NewServer(uioptions.WithConfigProvider(&uiconfig.Config{
		Host:                host,
		Port:                port,
		TemporalGRPCAddress: o.FrontendAddress,
		EnableUI:            true,
		DefaultNamespace:    o.Namespace,
		CORS:                uiconfig.CORS{CookieInsecure: true},
		HideLogs:            true,
		DisableNewsFetch:    true,
		Codec:               uiconfig.Codec{Endpoint: o.CodecEndpoint},
	}))
	s.uiErr = make(chan error, 1)
	go func() { s.uiErr <- s.ui.Start() }()
	// Start blocks while serving: wait until it answers or fails.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.uiErr:
			return fmt.Errorf("web UI: %w", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", o.UIAddress, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("web UI did not start within 10s")
}

// Stop stops the UI and the server.
func (s *Server) Stop() {
	if s.ui != nil {
		s.ui.Stop()
	}
	s.temporal.Stop()
}

func serverConfig(o Options, host string, port int) (*config.Config, error) {
	sql, err := sqliteConfig(o)
	if err != nil {
		return nil, err
	}
	// The services' own ports are below the ephemeral range: a port from
	// the range could become the source port of one of the connections the
	// server makes while it starts, before the service binds it.
	free := func() (int, error) { return freeport.Port(host) }
	service := func(grpcPort, httpPort int) config.Service {
		var s config.Service
		s.RPC.GRPCPort = grpcPort
		s.RPC.HTTPPort = httpPort
		s.RPC.BindOnIP = host
		return s
	}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = free(); err != nil {
			return nil, fmt.Errorf("finding a free port for temporal services: %w", err)
		}
	}
	var c config.Config
	c.Global.Membership.MaxJoinDuration = 30 * time.Second
	c.Global.Membership.BroadcastAddress = host
	c.Persistence.DefaultStore = "sqlite"
	c.Persistence.VisibilityStore = "sqlite"
	c.Persistence.NumHistoryShards = 1
	c.Persistence.DataStores = map[string]config.DataStore{"sqlite": {SQL: sql}}
	c.ClusterMetadata = &cluster.Config{
		FailoverVersionIncrement: 10,
		MasterClusterName:        clusterName,
		CurrentClusterName:       clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{
			clusterName: {
				Enabled:                true,
				InitialFailoverVersion: 1,
				RPCAddress:             o.FrontendAddress,
				HTTPAddress:            net.JoinHostPort(host, strconv.Itoa(ports[3])),
				ClusterID:              "replicator-dev",
			},
		},
	}
	c.DCRedirectionPolicy.Policy = "noop"
	c.Services = map[string]config.Service{
		"frontend": service(port, ports[3]),
		"history":  service(ports[0], 0),
		"matching": service(ports[1], 0),
		"worker":   service(ports[2], 0),
	}
	c.Archival.History.State = "disabled"
	c.Archival.Visibility.State = "disabled"
	c.NamespaceDefaults.Archival.History.State = "disabled"
	c.NamespaceDefaults.Archival.Visibility.State = "disabled"
	c.PublicClient.HostPort = o.FrontendAddress
	return &c, nil
}

func sqliteConfig(o Options) (*config.SQL, error) {
	file := filepath.Join(o.DataDir, "temporal.db")
	sql := &config.SQL{
		PluginName:   sqliteplugin.PluginName,
		DatabaseName: file,
		ConnectAttributes: map[string]string{
			"mode":         "rwc",
			"journal_mode": "wal",
			"synchronous":  "FULL",
		},
	}
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		if err := sqliteschema.SetupSchema(sql); err != nil {
			return nil, fmt.Errorf("creating temporal database %s: %w", file, err)
		}
	}
	ns, err := sqliteschema.NewNamespaceConfig(clusterName, o.Namespace, false, nil)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", o.Namespace, err)
	}
	if o.Retention > 0 {
		ns.Detail.Config.Retention = durationpb.New(o.Retention)
	}
	if err := sqliteschema.CreateNamespaces(sql, ns); err != nil {
		return nil, fmt.Errorf("registering namespace %s: %w", o.Namespace, err)
	}
	return sql, nil
}
