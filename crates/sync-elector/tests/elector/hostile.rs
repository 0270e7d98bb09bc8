//! Hostile clients: thousands of idle connections, requests whose headers or bodies never finish,
//! and a body far over the limit. The elector refuses what it must, keeps its memory bounded, and
//! serves everyone else as usual. Against the elector binary, started for real.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The elector's resident memory, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_slow_and_oversized_clients_do_not_hold_up_the_others() {
    let elector = support::start_elector(&[]);
    let addr = elector.url.trim_start_matches("http://").to_owned();
    let connect = || TcpStream::connect(&addr).expect("the elector accepts");

    // 2,000 connections that never send a byte, 200 whose headers never end, and 200 whose
    // body never comes.
    let mut hostile = Vec::new();
    for _ in 0..2_000 {
        hostile.push(connect());
    }
    for i in 0..200 {
        let mut s = connect();
        write!(s, "POST /v1/locks/slow-{i}/acquire HTTP/1.1\r\nHost: x\r\n").unwrap();
        hostile.push(s);
    }
    for i in 0..200 {
        let mut s = connect();
        write!(
            s,
            "POST /v1/locks/slow-body-{i}/acquire HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"ttl"
        )
        .unwrap();
        hostile.push(s);
    }

    // A body far over the limit is refused at once from its declared length, in the JSON shape.
    let mut huge = connect();
    write!(
        huge,
        "POST /v1/locks/huge/acquire HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n{{"
    )
    .unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = huge.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"error\":\"body_too_large\""), "{answer}");

    // Everyone else is served as usual, over HTTP/2 (the client) and HTTP/1.1 (the legacy path).
    let client = sync_client::Client::builder()
        .url(&elector.url)
        .build()
        .unwrap();
    let started = Instant::now();
    for _ in 0..20 {
        let guard = client
            .lock("normal")
            .on_lost(|| {})
            .acquire()
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
    let legacy = reqwest::Client::builder().http1_only().build().unwrap();
    let put = legacy
        .put(format!("{}/locks/legacy", elector.url))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "20 acquisitions took {:?} beside the hostile clients",
        started.elapsed()
    );

    // Nothing the hostile clients sent took a lock.
    let state: serde_json::Value = reqwest::get(format!("{}/v1/locks/slow-body-0", elector.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["holder"], serde_json::Value::Null, "{state}");

    // Memory stays bounded: hyper keeps at most about 24 KiB per open HTTP/1.1 connection (37 MiB
    // in all was measured here with these 2,400); the bound is generous, the figure is printed.
    let rss = rss_mib(elector.pid());
    eprintln!(
        "elector RSS with {} hostile connections open: {rss:.1} MiB",
        hostile.len()
    );
    assert!(rss < 256.0, "{rss:.1} MiB");
    drop(hostile);
}

/// A client that writes its whole oversized body before it reads (as Python's `requests` does)
/// reads the 413 the elector sent, not a reset: the elector lingers, reading and discarding the
/// rest. The body goes out in 32 KiB pieces 2 ms apart, as over a network: on loopback the
/// kernel's buffers would otherwise swallow all 2 MiB before the elector closes, and no reset
/// could show.
#[test]
fn a_client_that_sends_a_whole_oversized_body_before_reading_gets_its_413() {
    let elector = support::start_elector(&[]);
    let addr = elector.url.trim_start_matches("http://").to_owned();
    let body = vec![b' '; 2 << 20];
    for attempt in 0..3 {
        let mut stream = TcpStream::connect(&addr).expect("the elector accepts");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "POST /v1/locks/big/acquire HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        for (i, piece) in body.chunks(32 << 10).enumerate() {
            stream.write_all(piece).unwrap_or_else(|err| {
                panic!("attempt {attempt}: sending the body failed after {i} pieces: {err}")
            });
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .unwrap_or_else(|err| panic!("attempt {attempt}: reading the answer failed: {err}"));
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "attempt {attempt}: {answer}"
        );
        assert!(answer.contains("\"error\":\"body_too_large\""), "{answer}");
    }
}

/// Sends `request` on `stream` and reads one answer (head and a Content-Length body).
fn exchange(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed mid-answer: {text}");
        answer.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn silent_connections_are_closed_the_cap_holds_and_kept_alive_clients_may_idle() {
    let elector = support::start_elector(&["--client-timeout", "1s", "--max-connections", "20"]);
    let addr = elector.url.trim_start_matches("http://").to_owned();
    let connect = || {
        let s = TcpStream::connect(&addr).expect("the kernel accepts");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s
    };
    let health = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

    // A kept-alive client that spoke at once may idle past the timeout and speak again.
    let mut kept = connect();
    assert!(exchange(&mut kept, health).starts_with("HTTP/1.1 200"));

    // 19 silent connections fill the cap; one more client must wait for a slot.
    let mut silent: Vec<TcpStream> = (0..19).map(|_| connect()).collect();
    let started = Instant::now();
    let mut late = connect();
    let answer = exchange(&mut late, health);
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    eprintln!("a client over the cap was served after {waited:?}");

    // Every silent connection was closed by the elector (EOF), not left open.
    for s in &mut silent {
        let mut byte = [0u8; 1];
        assert_eq!(
            s.read(&mut byte).unwrap_or(0),
            0,
            "a silent connection got data"
        );
    }

    // A body that never arrives gets 408 in the JSON shape.
    let mut slow = connect();
    let answer = exchange(
        &mut slow,
        "POST /v1/locks/slow/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"ttl",
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");

    std::thread::sleep(Duration::from_millis(1500));
    assert!(exchange(&mut kept, health).starts_with("HTTP/1.1 200"));
}
