//! Hostile request bodies meet limits, not memory: an endless part header, a 200 MB CSV
//! line, 10,000 tiny parts, a body that stalls and a request head sent a byte at a time
//! are each answered 4xx (or the connection is closed) by a real `producer serve` process, whose peak resident memory
//! (VmHWM) stays under [`PEAK_RSS_BOUND`]. Bodies are streamed over raw TCP, chunked, so
//! the test does not hold them either.

use std::time::Duration;

use serde_json::Value;
use shardflow_testkit::dataset::free_port;
use shardflow_testkit::{TestEnv, bin, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// What the API may reach at its peak while refusing these bodies.
const PEAK_RSS_BOUND: u64 = 200 << 20;
const BOUNDARY: &str = "hostile-boundary-5c2e";
/// How long each scenario may take to be answered once its body is sent (or stalls).
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// How long sending a body may take (a server that buffers it slows down).
const WRITE_DEADLINE: Duration = Duration::from_secs(120);

/// `producer serve` on its own port, with short body and header timeouts; killed when dropped.
struct Api {
    child: Child,
    port: u16,
    _env: TestEnv,
}

impl Api {
    async fn start(name: &str) -> Self {
        let env = TestEnv::new(name);
        let port = free_port();
        let child = Command::new(bin("producer"))
            .arg("--config")
            .arg(&env.config_path)
            .arg("serve")
            .env("SHARDFLOW__API__LISTEN", format!("127.0.0.1:{port}"))
            .env("SHARDFLOW__API__BODY_TIMEOUT", "2s")
            .env("SHARDFLOW__API__HEADER_TIMEOUT", "2s")
            .env("RUST_LOG", std::env::var("SHARDFLOW_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .kill_on_drop(true)
            .spawn()
            .expect("start producer serve");
        let base = format!("http://127.0.0.1:{port}");
        eventually("the API to be ready", Duration::from_secs(60), || async {
            reqwest::get(format!("{base}/readyz")).await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        Self { child, port, _env: env }
    }

    /// The process's peak resident set so far (VmHWM), in bytes.
    fn peak_rss(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM");
        kib * 1024
    }

    fn assert_memory_flat(&self, scenario: &str) {
        let peak = self.peak_rss();
        println!("{scenario}: API peak RSS (VmHWM) {:.1} MB", peak as f64 / 1e6);
        assert!(peak < PEAK_RSS_BOUND, "{scenario}: the API reached {peak} bytes of resident memory");
    }
}

/// How the server ended the exchange.
#[derive(Debug)]
enum Answer {
    /// A status line and whatever JSON body came with it.
    Status(u16, Value),
    /// The connection closed (or was reset) without a response.
    Closed,
    /// Neither an answer nor a close before the deadlines.
    Silent,
}

/// Send a chunked request `head` to `port`, then the body `next` yields (one chunk per
/// call, `None` at the end, after which the terminating chunk is sent unless `stall`),
/// reading the answer at the same time; stop writing once the server answered or closed.
async fn exchange(port: u16, head: &str, mut next: impl FnMut() -> Option<Vec<u8>>, stall: bool) -> (Answer, u64) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut response = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
            if complete(&response) {
                break;
            }
        }
        response
    });
    let mut sent = 0u64;
    let writing = async {
        write.write_all(head.as_bytes()).await?;
        while let Some(chunk) = next() {
            if reader.is_finished() {
                return Ok(());
            }
            write.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
            write.write_all(&chunk).await?;
            write.write_all(b"\r\n").await?;
            sent += chunk.len() as u64;
        }
        if !stall {
            write.write_all(b"0\r\n\r\n").await?;
        }
        std::io::Result::Ok(())
    };
    // A write error means the server closed: the reader says what it answered.
    let _ = tokio::time::timeout(WRITE_DEADLINE, writing).await;
    let Ok(response) = tokio::time::timeout(ANSWER_DEADLINE, reader).await else {
        return (Answer::Silent, sent);
    };
    (parse(&response.expect("reader")), sent)
}

/// Whether `response` holds a status line, headers and the body its Content-Length gives.
fn complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
    length.is_some_and(|n: usize| response.len() >= end + 4 + n)
}

fn parse(response: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(response);
    let Some(status) = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|s| s.parse().ok()) else {
        return Answer::Closed;
    };
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Answer::Status(status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn head(path: &str, content_type: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
}

fn multipart_head(path: &str) -> String {
    head(path, &format!("multipart/form-data; boundary={BOUNDARY}"))
}

fn file_part(field: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"hostile.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n"
    )
}

/// `first`, then `count` chunks of `size` bytes of `fill`, then `last`.
fn streamed(first: String, fill: u8, size: usize, count: usize, last: String) -> impl FnMut() -> Option<Vec<u8>> {
    let mut i = 0;
    move || {
        i += 1;
        match i {
            1 => Some(first.clone().into_bytes()),
            n if n <= count + 1 => Some(vec![fill; size]),
            n if n == count + 2 && !last.is_empty() => Some(last.clone().into_bytes()),
            _ => None,
        }
    }
}

/// Print what the server did and its peak memory so far, then check it refused.
fn assert_refused(api: &Api, scenario: &str, answer: &Answer, sent: u64) {
    println!("{scenario}: {answer:?} after {sent} body bytes; peak RSS so far {:.1} MB", api.peak_rss() as f64 / 1e6);
    match answer {
        Answer::Status(status, _) => assert!((400..500).contains(status), "{scenario}: answered {status}"),
        Answer::Closed => {}
        Answer::Silent => panic!("{scenario}: no answer and no close before the deadline"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_part_header_is_refused() {
    let api = Api::start("hostile_header").await;
    // Up to 1 GiB of one header line; the server must answer long before that.
    let first = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\nX-Endless: ");
    let (answer, sent) =
        exchange(api.port, &multipart_head("/shards"), streamed(first, b'a', 64 << 10, 16 << 10, String::new()), true)
            .await;
    assert_refused(&api, "endless part header", &answer, sent);
    if let Answer::Status(_, body) = &answer {
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("max_part_header_bytes")), "{body}");
    }
    api.assert_memory_flat("endless part header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_line_is_refused_in_a_shard_and_a_bad_row_in_rounds() {
    let api = Api::start("hostile_line").await;
    let line = |header: &str| format!("{}{header}\n", file_part(if header == "Amount" { "file" } else { "csv_file" }));
    let tail = |rest: &str| format!("{rest}\r\n--{BOUNDARY}--\r\n");

    // A shard is all or nothing: refused whole.
    let (answer, sent) = exchange(
        api.port,
        &multipart_head("/shards"),
        streamed(line("Amount"), b'1', 1 << 20, 200, tail("\n2.5\n")),
        false,
    )
    .await;
    assert_refused(&api, "200 MB line, POST /shards", &answer, sent);
    let Answer::Status(400, body) = &answer else { panic!("expected 400: {answer:?}") };
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("max_record_bytes")), "{body}");
    api.assert_memory_flat("200 MB line, POST /shards");

    // Game rounds count it as one bad row, with a short reason, and publish the others.
    let header = shardflow_rounds_header();
    let good = "2024-01-01 00:00:00,r1,1,7,1,1,1,1,A,B\n";
    let (answer, sent) = exchange(
        api.port,
        &multipart_head("/csv_upload"),
        streamed(line(&header), b'x', 1 << 20, 200, tail(&format!("\n{good}"))),
        false,
    )
    .await;
    let peak = api.peak_rss() as f64 / 1e6;
    println!("200 MB line, POST /csv_upload: {answer:?} after {sent} body bytes; peak RSS so far {peak:.1} MB");
    let Answer::Status(200, view) = &answer else { panic!("expected 200 with a bad row: {answer:?}") };
    assert_eq!((view["rows_read"].as_u64(), view["bad_rows"].as_u64()), (Some(2), Some(1)), "{view}");
    assert_eq!(view["rows_published"], 1, "{view}");
    let reason = view["bad_row_samples"][0]["reason"].as_str().expect("reason");
    assert!(reason.contains("max_record_bytes") && reason.len() < 300, "{reason}");
    api.assert_memory_flat("200 MB line, POST /csv_upload");
}

fn shardflow_rounds_header() -> String {
    "created_timestamp,game_instance_id,user_id,game_id,real_amount_bet,bonus_amount_bet,real_amount_win,\
     bonus_amount_win,game_name,provider"
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tiny_parts_are_refused() {
    let api = Api::start("hostile_parts").await;
    let mut parts = 0;
    let next = move || {
        parts += 1;
        match parts {
            1..=10_000 => Some(
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"p{parts}\"\r\n\r\n1\r\n").into_bytes(),
            ),
            10_001 => Some(format!("{}Amount\n1.5\n2.5\n\r\n--{BOUNDARY}--\r\n", file_part("file")).into_bytes()),
            _ => None,
        }
    };
    let (answer, sent) = exchange(api.port, &multipart_head("/shards"), next, false).await;
    assert_refused(&api, "10,000 tiny parts", &answer, sent);
    let Answer::Status(_, body) = &answer else { panic!("expected an answer: {answer:?}") };
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("max_parts")), "{body}");
    api.assert_memory_flat("10,000 tiny parts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408() {
    let api = Api::start("hostile_slow").await;
    for (path, content_type, first) in [
        ("/shards", format!("multipart/form-data; boundary={BOUNDARY}"), file_part("file") + "Amount\n1.5\n"),
        ("/csv_upload", format!("multipart/form-data; boundary={BOUNDARY}"), file_part("csv_file")),
        ("/jobs", "application/json".to_string(), "{\"file_path\": ".to_string()),
    ] {
        let started = std::time::Instant::now();
        let (answer, sent) =
            exchange(api.port, &head(path, &content_type), streamed(first, b' ', 1, 1, String::new()), true).await;
        assert_refused(&api, &format!("stalled body, POST {path}"), &answer, sent);
        println!("  answered after {:.1} s", started.elapsed().as_secs_f64());
        if let Answer::Status(status, body) = &answer {
            assert_eq!(*status, 408, "{path}: {body}");
            assert_eq!(body["error"]["code"], "body_timeout", "{path}: {body}");
        }
    }
    api.assert_memory_flat("stalled bodies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_a_byte_at_a_time_is_disconnected() {
    let api = Api::start("hostile_slow_head").await;
    let stream = TcpStream::connect(("127.0.0.1", api.port)).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut response = Vec::new();
        let _ = read.read_to_end(&mut response).await;
        response
    });
    let started = std::time::Instant::now();
    write.write_all(b"POST /shards HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.expect("request line");
    // One byte of a header every 100 ms, never its end: only a timeout on the whole head
    // (not one on silence) ends this.
    // The client's pace, not a wait for the server: a tick paces the bytes, and the loop
    // ends when the server closes or at the deadline.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0u64;
    while !reader.is_finished() && started.elapsed() < ANSWER_DEADLINE {
        pace.tick().await;
        if write.write_all(b"a").await.is_err() {
            break;
        }
        sent += 1;
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), reader).await;
    let Ok(Ok(response)) = closed else { panic!("the connection is still open after {sent} header bytes") };
    let answer = parse(&response);
    println!("  closed after {:.1} s and {sent} header bytes", started.elapsed().as_secs_f64());
    assert_refused(&api, "slow request head", &answer, sent);
    api.assert_memory_flat("slow request head");
}
