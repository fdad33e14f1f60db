package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/telemetry/serve"
)

// Socket names inside the socket directory, and the modes the agent gives them: Envoy and the
// application may run as other users of the directory's group.
const (
	SDSSocket      = "sds.sock"
	WorkloadSocket = "workload.sock"
	SocketDirMode  = fs.FileMode(0o750)
	SocketMode     = fs.FileMode(0o660)
)

// Defaults of Config.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
)

// streamGrace is how long SDS and Workload API watches, which never finish on their own, may
// stay open after the agent is asked to stop.
const streamGrace = time.Second

// Config configures an Agent.
type Config struct {
	// ControlPlane is the certificate service's host:port.
	ControlPlane string
	// TokenFile holds the join token for first contact (re-read at every attempt, so a new
	// token can be dropped in without a restart).
	TokenFile string
	// SocketDir holds the sockets and the private state subdirectory. The agent creates it
	// 0750, or uses it as it is when someone else owns it (a pod's emptyDir, mounted root-owned
	// and world-writable, where the agent runs as the proxy's UID and may not chmod it).
	SocketDir string
	// SocketMode is the mode of the sockets: 0660 (SocketMode) unless set; in a pod, where
	// applications run as other UIDs than the agent, 0666 (the volume is the pod's own).
	SocketMode fs.FileMode
	// ServiceAccountTokenFile is the pod's projected Kubernetes service-account token (audience
	// "portcullis"), re-read at every attempt (the kubelet rotates it); used instead of a join
	// token. It needs TrustDomain and Pins.
	ServiceAccountTokenFile string
	// TrustDomain of the mesh, for the SPIFFE ID a service-account token asks for.
	TrustDomain spiffeid.TrustDomain
	// Pins ("sha256:<hex>" of the trust bundle's roots) verify the control plane on first
	// contact with a service-account token.
	Pins []string
	// NoPersist keeps key and SVID in memory only: a restart then needs a new token.
	NoPersist bool
	// BackoffMin and BackoffMax bound the retry delay while the control plane is unreachable.
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger
	Meter                  metric.Meter
}

// Agent obtains, rotates and serves one workload identity.
type Agent struct {
	cfg Config
	log *slog.Logger
	cur *current
	sds *sdsServer
	rot *rotator

	readyOnce sync.Once
	rotations metric.Int64Counter
}

// New checks cfg and loads a persisted identity if there is a usable one.
func New(cfg Config) (*Agent, error) {
	if cfg.ControlPlane == "" || cfg.SocketDir == "" {
		return nil, errors.New("agent: control plane address and socket directory are required")
	}
	if cfg.ServiceAccountTokenFile != "" && (cfg.TrustDomain.IsZero() || len(cfg.Pins) == 0) {
		return nil, errors.New("agent: a service account token needs the trust domain and the pins of the trust bundle's roots")
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultMinBackoff
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(DefaultMaxBackoff, cfg.BackoffMin)
	}
	if cfg.SocketMode == 0 {
		cfg.SocketMode = SocketMode
	}
	if cfg.SocketMode&^0o666 != 0 {
		return nil, fmt.Errorf("agent: socket mode %#o: only read and write bits make sense on a socket", cfg.SocketMode)
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, cur: &current{}, sds: newSDSServer()}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	m := cfg.Meter
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	if err := a.initMetrics(m); err != nil {
		return nil, err
	}
	if err := prepareSocketDir(cfg.SocketDir); err != nil {
		return nil, err
	}
	a.rot = &rotator{
		addr: cfg.ControlPlane, tokenFile: cfg.TokenFile, socketDir: cfg.SocketDir, persist: !cfg.NoPersist,
		saTokenFile: cfg.ServiceAccountTokenFile, trustDomain: cfg.TrustDomain, pins: cfg.Pins,
		backoffMin: cfg.BackoffMin, backoffMax: cfg.BackoffMax, log: a.log, cur: a.cur,
		onRotate: func(ok bool) {
			a.rotations.Add(context.Background(), 1, metric.WithAttributes(attribute.Bool("ok", ok)))
		},
	}
	if cfg.NoPersist {
		return a, removeIdentity(cfg.SocketDir)
	}
	a.loadPersisted()
	return a, nil
}

// loadPersisted starts from the identity a previous run left, unless the token file now names
// another identity (the operator re-targeted the agent).
func (a *Agent) loadPersisted() {
	id, err := loadIdentity(a.cfg.SocketDir, time.Now())
	if err != nil {
		a.log.Warn("ignoring the persisted SVID; joining with the token", "err", err)
		return
	}
	if id == nil {
		return
	}
	if raw, err := readToken(a.cfg.TokenFile); err == nil {
		if tok, err := attest.Parse(raw); err == nil && tok.SPIFFEID != id.ID() {
			a.log.Info("token file names another SPIFFE ID than the persisted SVID; joining with the token", "persisted", id.ID().String(), "token", tok.SPIFFEID.String())
			return
		}
	}
	a.log.Info("loaded persisted SVID; it will be renewed over mTLS", "spiffe_id", id.ID().String(), "expires", id.NotAfter().UTC().Format(time.RFC3339))
	a.cur.set(id)
}

func (a *Agent) initMetrics(m metric.Meter) error {
	var err error
	a.rotations, err = m.Int64Counter("portcullis_agent_svid_rotations",
		metric.WithDescription("Attempts to obtain or renew the SVID, by outcome (ok=true|false)."))
	if err != nil {
		return fmt.Errorf("agent: metrics: %w", err)
	}
	_, err = m.Float64ObservableGauge("portcullis_agent_svid_expiry_seconds",
		metric.WithDescription("Seconds until the agent's SVID expires (absent before the first SVID)."),
		metric.WithUnit("s"),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			if id, _ := a.cur.Current(); id != nil {
				o.Observe(time.Until(id.NotAfter()).Seconds(), metric.WithAttributes(attribute.String("spiffe_id", id.ID().String())))
			}
			return nil
		}))
	if err != nil {
		return fmt.Errorf("agent: metrics: %w", err)
	}
	return nil
}

// Ready returns nil once the agent has a valid SVID: only then can Envoy and the application
// get their identity.
func (a *Agent) Ready() error {
	id, _ := a.cur.Current()
	if id == nil {
		return errors.New("no SVID yet")
	}
	if !time.Now().Before(id.NotAfter()) {
		return errors.New("SVID expired and not renewed")
	}
	return nil
}

// Current returns the identity being served (nil before the first SVID) and a channel closed
// when it changes.
func (a *Agent) Current() (*Identity, <-chan struct{}) { return a.cur.Current() }

// Run serves the sockets and keeps the identity fresh until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	sdsLn, err := listenUnix(filepath.Join(a.cfg.SocketDir, SDSSocket), a.cfg.SocketMode)
	if err != nil {
		return err
	}
	wlLn, err := listenUnix(filepath.Join(a.cfg.SocketDir, WorkloadSocket), a.cfg.SocketMode)
	if err != nil {
		return errors.Join(err, sdsLn.Close())
	}
	sdsSrv, wlSrv := grpc.NewServer(), grpc.NewServer()
	a.sds.register(ctx, sdsSrv, a.log.With("server", "sds"))
	(&workloadAPI{cur: a.cur}).register(wlSrv)
	a.log.Info("agent serving", "sds", sdsLn.Addr().String(), "workload_api", wlLn.Addr().String(), "control_plane", a.cfg.ControlPlane)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve.GRPC(gctx, "agent: sds server", sdsSrv, sdsLn, streamGrace) })
	g.Go(func() error { return serve.GRPC(gctx, "agent: workload API server", wlSrv, wlLn, streamGrace) })
	g.Go(func() error { return a.rot.run(gctx) })
	g.Go(func() error { return a.publish(gctx) })
	return g.Wait()
}

// publish pushes every new identity to SDS (the Workload API watches it directly).
func (a *Agent) publish(ctx context.Context) error {
	for {
		id, changed := a.cur.Current()
		if id != nil {
			if err := a.sds.update(id); err != nil {
				a.log.Error("building SDS secrets failed", "err", err)
			}
			a.readyOnce.Do(func() {
				a.log.Info("agent ready: SVID available over SDS and the Workload API", "spiffe_id", id.ID().String(),
					"tls_secret", TLSSecretName(id), "validation_secret", ValidationSecretName(id))
			})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// prepareSocketDir creates the socket directory 0750, or tightens one the agent owns; a
// directory someone else owns (a pod's emptyDir) is used as it is.
func prepareSocketDir(dir string) error {
	if err := os.MkdirAll(dir, SocketDirMode); err != nil {
		return fmt.Errorf("agent: socket dir: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("agent: socket dir: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("agent: socket dir %s is not a directory", dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil
	}
	if st.Mode().Perm() != SocketDirMode {
		if err := os.Chmod(dir, SocketDirMode); err != nil {
			return fmt.Errorf("agent: socket dir: %w", err)
		}
	}
	return nil
}

// listenUnix listens on a unix socket with the given mode, replacing a stale socket a previous
// run left behind (but never another kind of file).
func listenUnix(path string, mode fs.FileMode) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("agent: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		return nil, errors.Join(fmt.Errorf("agent: %w", err), ln.Close())
	}
	return ln, nil
}
