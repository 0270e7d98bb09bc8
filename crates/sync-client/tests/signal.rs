//! Resigning on SIGTERM: a program that runs its election with `run_until(shutdown_signal())`,
//! or holds a blocking lock with `on_shutdown_signal`, releases and exits 0 when signalled, and
//! the lock is free for the next holder. The programs are this test binary started again as
//! child processes, against an elector served in-process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sync_client::Client;
use sync_elector::{Config, Server};

const NAME: &str = "signalled";

#[test]
#[ignore = "a role for a child process; the tests below start it"]
fn child_leads_until_shutdown_signal() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let election = sync_client::Election::new(NAME, || println!("LEADING"), || {});
        election
            .run_until(sync_client::shutdown_signal())
            .await
            .unwrap();
    });
    println!("RESIGNED");
}

#[test]
#[ignore = "a role for a child process; the tests below start it"]
fn child_holds_a_blocking_lock_until_shutdown_signal() {
    use std::sync::Arc;
    use sync_client::blocking::{Lock, on_shutdown_signal};

    let lock = Arc::new(Lock::new(NAME));
    let held = lock.clone();
    on_shutdown_signal(move || {
        held.release().unwrap();
        println!("RELEASED");
        std::process::exit(0);
    });
    lock.wait_one().unwrap();
    println!("LEADING");
    std::thread::sleep(Duration::from_secs(600));
}

/// Starts role `role` against the elector at `url` and waits until it holds the lock.
fn start_holding(role: &str, url: &str) -> (Child, impl Iterator<Item = String> + use<>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            role,
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(sync_client::URL_ENV, url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    assert!(
        lines.any(|line| line.contains("LEADING")),
        "the child took the lock"
    );
    (child, lines)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the child did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn holder(runtime: &tokio::runtime::Runtime, client: &Client) -> Option<String> {
    runtime.block_on(client.lock_state(NAME)).unwrap().holder
}

fn sigterm_releases(role: &str, says: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(Server::start(Config::local("127.0.0.1:0".parse().unwrap())))
        .unwrap();
    let client = Client::builder().url(server.url()).build().unwrap();
    let (mut child, mut lines) = start_holding(role, &server.url());
    assert!(holder(&runtime, &client).is_some());

    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    // Without a handler SIGTERM would have killed it: exit 0 means it handled the signal.
    assert!(
        status.success(),
        "the child exited 0 after SIGTERM: {status}"
    );
    assert!(
        lines.any(|line| line.contains(says)),
        "the child said {says}"
    );
    assert_eq!(
        holder(&runtime, &client),
        None,
        "the lock was released before the program exited"
    );
    runtime.block_on(server.shutdown());
}

#[test]
fn an_election_run_until_the_shutdown_signal_resigns_on_sigterm() {
    sigterm_releases("child_leads_until_shutdown_signal", "RESIGNED");
}

#[test]
fn a_blocking_lock_is_released_by_its_shutdown_signal_callback() {
    sigterm_releases(
        "child_holds_a_blocking_lock_until_shutdown_signal",
        "RELEASED",
    );
}
