package kube

import (
	"context"
	"errors"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaderOptions configure leader election.
type LeaderOptions struct {
	Client    kubernetes.Interface
	Namespace string
	// Name of the Lease. "portcullis-controlplane" unless set.
	Name string
	// Identity of this replica (its pod name).
	Identity string
	Logger   *slog.Logger
	// LeaseDuration, RenewDeadline and RetryPeriod: 15s, 10s, 2s unless set (client-go's usual).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// RunAsLeader runs lead while this replica holds the Lease, and campaigns again whenever it
// loses it, until ctx ends. Only the leader writes statuses, the webhook's caBundle and other
// cluster state; every replica serves.
func RunAsLeader(ctx context.Context, opts LeaderOptions, lead func(ctx context.Context)) error {
	if opts.Client == nil || opts.Namespace == "" || opts.Identity == "" {
		return errors.New("kube: leader election needs a client, a namespace and an identity")
	}
	if opts.Name == "" {
		opts.Name = "portcullis-controlplane"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LeaseDuration <= 0 {
		opts.LeaseDuration, opts.RenewDeadline, opts.RetryPeriod = 15*time.Second, 10*time.Second, 2*time.Second
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: opts.Namespace, Name: opts.Name},
		Client:     opts.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: opts.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   opts.LeaseDuration,
			RenewDeadline:   opts.RenewDeadline,
			RetryPeriod:     opts.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            opts.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					opts.Logger.Info("leading: writing statuses and cluster state", "lease", opts.Namespace+"/"+opts.Name, "identity", opts.Identity)
					lead(ctx)
				},
				OnStoppedLeading: func() {
					opts.Logger.Info("no longer leading", "lease", opts.Namespace+"/"+opts.Name, "identity", opts.Identity)
				},
				OnNewLeader: func(id string) {
					if id != opts.Identity {
						opts.Logger.Info("following", "leader", id)
					}
				},
			},
		})
		if err != nil {
			return err
		}
		le.Run(ctx)
	}
	return nil
}
