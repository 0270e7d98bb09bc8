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
//
// With --worker it is a sync-bench worker instead (crates/sync-bench/src/worker.rs): it prints
// `ACQ <ns> 0`, `REL <ns>` and `LOST <ns>` and takes the orders `release`, `stop` and `acquire`
// on stdin. `release` cancels the election, which releases the Lease; `acquire` campaigns again.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
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
	"k8s.io/klog/v2"
)

var printing sync.Mutex

// now reads the monotonic clock, in nanoseconds.
func now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// say prints one transition with the monotonic clock's reading.
func say(what, identity string) {
	at := now()
	printing.Lock()
	defer printing.Unlock()
	fmt.Printf("%d %s %s\n", at, what, identity)
}

// report prints one sync-bench worker line: KIND, the clock's reading, and extra fields.
func report(kind string, extra ...string) {
	line := fmt.Sprintf("%s %d", kind, now())
	for _, e := range extra {
		line += " " + e
	}
	printing.Lock()
	defer printing.Unlock()
	fmt.Println(line)
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
	worker := flag.Bool("worker", false, "speak sync-bench's worker protocol on stdin and stdout")
	flag.Parse()
	if *lease == "" || *identity == "" {
		fmt.Fprintln(os.Stderr, "usage: client-go-elector --lease NAME --identity ID [--namespace NS] [--kubeconfig FILE] [--lease-duration D --renew-deadline D --retry-period D] [--worker]")
		os.Exit(2)
	}

	restConfig, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "reading the kubeconfig %q: %v\n", *kubeconfig, err)
		os.Exit(1)
	}
	client := kubernetes.NewForConfigOrDie(restConfig)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: *lease, Namespace: *namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: *identity},
	}

	config := leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   *leaseDuration,
		RenewDeadline:   *renewDeadline,
		RetryPeriod:     *retryPeriod,
		ReleaseOnCancel: *releaseOnCancel,
		Name:            *lease,
	}
	if *worker {
		// client-go logs every attempt and success; a benchmark wants its errors only.
		klog.LogToStderr(false)
		klog.SetOutput(io.Discard)
		klog.SetOutputBySeverity("ERROR", os.Stderr)
		benchWorker(config)
		return
	}

	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		cancel()
	}()

	config.Callbacks = leaderelection.LeaderCallbacks{
		OnStartedLeading: func(ctx context.Context) {
			say("started-leading", *identity)
			<-ctx.Done()
		},
		OnStoppedLeading: func() { say("stopped-leading", *identity) },
		OnNewLeader:      func(leader string) { say("new-leader", leader) },
	}
	elector := newElector(config)
	say("candidate", *identity)
	// Run returns when ctx is cancelled (after releasing, when leading) or when leadership is
	// lost; either way this candidate is done.
	elector.Run(ctx)
	say("exiting", *identity)
}

// newElector builds the LeaderElector, or exits 2 when the configuration is refused.
func newElector(config leaderelection.LeaderElectionConfig) *leaderelection.LeaderElector {
	elector, err := leaderelection.NewLeaderElector(config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "configuring the election: %v\n", err)
		os.Exit(2)
	}
	return elector
}

// benchWorker campaigns, reports `ACQ` when leading, and on `release` or `stop` cancels the
// election: ReleaseOnCancel releases the Lease before Run returns. After `release` it waits for
// `acquire` and campaigns again; after `stop` it idles. Leadership lost without an order prints
// `LOST` and exits, as an application would. The end of stdin (the harness went away) exits.
func benchWorker(config leaderelection.LeaderElectionConfig) {
	orders := make(chan string)
	go func() {
		lines := bufio.NewScanner(os.Stdin)
		for lines.Scan() {
			orders <- lines.Text()
		}
		os.Exit(0)
	}()
	for {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		config.Callbacks = leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { report("ACQ", "0") },
			OnStoppedLeading: func() {
				if ctx.Err() == nil {
					report("LOST")
					os.Exit(0)
				}
			},
		}
		elector := newElector(config)
		go func() {
			elector.Run(ctx)
			close(done)
		}()
		order := <-orders
		if order != "release" && order != "stop" {
			fmt.Fprintf(os.Stderr, "unknown order %q while campaigning or leading\n", order)
			os.Exit(2)
		}
		report("REL")
		cancel()
		<-done
		if order == "stop" {
			select {}
		}
		if next := <-orders; next != "acquire" {
			fmt.Fprintf(os.Stderr, "after a release only `acquire` makes sense, not %q\n", next)
			os.Exit(2)
		}
	}
}
