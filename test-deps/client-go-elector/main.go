// client-go-elector is client-go's leader election, run as the tests' peer of ours: a
// LeaderElector with a LeaseLock on one Lease, with client-go's default timings or given ones,
// and ReleaseOnCancel. It prints each transition on its own line, stamped with CLOCK_MONOTONIC in
// nanoseconds so that the Rust tests and sync-bench read it on the clock their own processes use:
//
//	<ns> started-leading <identity>
//	<ns> stopped-leading <identity>
//	<ns> new-leader <identity>
//	<ns> exiting <identity>
//
// SIGTERM or SIGINT cancels the election: a leader releases the Lease (ReleaseOnCancel) and the
// program exits 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

var printing sync.Mutex

// say prints one transition with the monotonic clock's reading.
func say(what, identity string) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	printing.Lock()
	defer printing.Unlock()
	fmt.Printf("%d %s %s\n", ts.Nano(), what, identity)
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "the kubeconfig to use")
	namespace := flag.String("namespace", "default", "the Lease's namespace")
	lease := flag.String("lease", "", "the Lease's name (required)")
	identity := flag.String("identity", "", "this candidate's holder identity (required)")
	leaseDuration := flag.Duration("lease-duration", 15*time.Second, "LeaseDuration (client-go's usual default: 15s)")
	renewDeadline := flag.Duration("renew-deadline", 10*time.Second, "RenewDeadline (usual default: 10s)")
	retryPeriod := flag.Duration("retry-period", 2*time.Second, "RetryPeriod (usual default: 2s)")
	releaseOnCancel := flag.Bool("release-on-cancel", true, "release the Lease when cancelled")
	flag.Parse()
	if *lease == "" || *identity == "" {
		fmt.Fprintln(os.Stderr, "usage: client-go-elector --lease NAME --identity ID [--namespace NS] [--kubeconfig FILE] [--lease-duration D --renew-deadline D --retry-period D]")
		os.Exit(2)
	}

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "reading the kubeconfig %q: %v\n", *kubeconfig, err)
		os.Exit(1)
	}
	client := kubernetes.NewForConfigOrDie(config)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: *lease, Namespace: *namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: *identity},
	}

	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		cancel()
	}()

	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   *leaseDuration,
		RenewDeadline:   *renewDeadline,
		RetryPeriod:     *retryPeriod,
		ReleaseOnCancel: *releaseOnCancel,
		Name:            *lease,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				say("started-leading", *identity)
				<-ctx.Done()
			},
			OnStoppedLeading: func() { say("stopped-leading", *identity) },
			OnNewLeader:      func(leader string) { say("new-leader", leader) },
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "configuring the election: %v\n", err)
		os.Exit(2)
	}
	say("candidate", *identity)
	// Run returns when ctx is cancelled (after releasing, when leading) or when leadership is
	// lost; either way this candidate is done.
	elector.Run(ctx)
	say("exiting", *identity)
}
