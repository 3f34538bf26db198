//! A fault-injecting HTTP proxy in front of the real ClickHouse: every request is
//! forwarded to the server and its answer returned, except those a test has asked to fail
//! (the next `n` statements starting with a given text answer 500 with a ClickHouse-style
//! exception, as a server that is briefly unavailable would; or every insert carrying a
//! given value answers a server code, as a server refusing that row would). The real
//! server does all the work; the proxy only decides which calls never reach it.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// A statement to refuse: the text it starts with, bytes its body must hold (if any), how
/// many to let through first, how many to refuse after those, and the exception to answer.
struct Rule {
    start: String,
    holding: Option<Vec<u8>>,
    pass: usize,
    refuse: usize,
    answer: String,
}

impl Rule {
    fn matches(&self, sql: &str, body: &[u8]) -> bool {
        self.refuse > 0
            && sql.starts_with(self.start.as_str())
            && self.holding.as_ref().is_none_or(|needle| body.windows(needle.len()).any(|w| w == needle.as_slice()))
    }
}

#[derive(Default)]
struct Faults {
    rules: Vec<Rule>,
    refused: usize,
}

struct Proxied {
    upstream: String,
    client: reqwest::Client,
    faults: Mutex<Faults>,
}

/// A running proxy; it serves until the test's runtime ends.
#[derive(Clone)]
pub struct ClickHouseProxy {
    /// The proxy's URL, to put in `clickhouse.url`.
    pub url: String,
    proxied: Arc<Proxied>,
}

impl ClickHouseProxy {
    /// Start a proxy to `upstream` (ClickHouse's HTTP URL) on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound (tests only).
    pub async fn start(upstream: &str) -> Self {
        Self::start_on(upstream, 0).await
    }

    /// As [`ClickHouseProxy::start`], on loopback port `port` (0: a free one).
    ///
    /// # Panics
    /// When the port cannot be bound (tests only).
    pub async fn start_on(upstream: &str, port: u16) -> Self {
        let proxied = Arc::new(Proxied {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            faults: Mutex::new(Faults::default()),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the proxy");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let app = axum::Router::new().fallback(forward).with_state(proxied.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, proxied }
    }

    /// Of the statements that start with `statement` (case-insensitive, e.g.
    /// `INSERT INTO uploads`), let the next `pass` through, then refuse `times`.
    pub fn fail(&self, statement: &str, pass: usize, times: usize) {
        let answer =
            "Code: 999, e.displayText() = DB::Exception: refused by the test's proxy, e.what() = DB::Exception\n";
        self.push(Rule {
            start: statement.to_ascii_uppercase(),
            holding: None,
            pass,
            refuse: times,
            answer: answer.into(),
        });
    }

    /// Refuse every statement that starts with `statement` and whose body holds `value`
    /// (an insert carrying that row), answering ClickHouse's exception `code` with
    /// `message`, as a server that refuses the row for good would.
    pub fn refuse_holding(&self, statement: &str, value: &[u8], code: u32, message: &str) {
        let answer = format!("Code: {code}, e.displayText() = DB::Exception: {message}, e.what() = DB::Exception\n");
        let start = statement.to_ascii_uppercase();
        self.push(Rule { start, holding: Some(value.to_vec()), pass: 0, refuse: usize::MAX, answer });
    }

    fn push(&self, rule: Rule) {
        if let Ok(mut faults) = self.proxied.faults.lock() {
            faults.rules.push(rule);
        }
    }

    /// Statements refused so far.
    pub fn refused(&self) -> usize {
        self.proxied.faults.lock().map(|f| f.refused).unwrap_or(0)
    }
}

/// The statement of a ClickHouse HTTP call: the `query` parameter, then the body.
fn statement(query: Option<&str>, body: &[u8]) -> String {
    let from_url = query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| {
        let value = pair.strip_prefix("query=")?;
        let plus_as_space = value.replace('+', " ");
        Some(percent_decode(&plus_as_space))
    });
    let mut text = from_url.unwrap_or_default();
    text.push(' ');
    text.push_str(&String::from_utf8_lossy(&body[..body.len().min(4096)]));
    // Identifiers may come quoted (`uploads`): rules name them bare.
    text.replace('`', "").trim_start().to_ascii_uppercase()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn forward(State(proxied): State<Arc<Proxied>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    let sql = statement(parts.uri.query(), &body);
    let refusal = proxied.faults.lock().ok().and_then(|mut faults| {
        let rule = faults.rules.iter_mut().find(|r| r.matches(&sql, &body))?;
        if rule.pass > 0 {
            rule.pass -= 1;
            return None;
        }
        rule.refuse -= 1;
        let answer = rule.answer.clone();
        faults.refused += 1;
        Some(answer)
    });
    if let Some(answer) = refusal {
        return (StatusCode::INTERNAL_SERVER_ERROR, answer).into_response();
    }
    let target = format!("{}{}", proxied.upstream, parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            headers.append(name, value.clone());
        }
    }
    let sent = proxied.client.request(parts.method, target).headers(headers).body(body).send().await;
    let Ok(answer) = sent else {
        return (StatusCode::BAD_GATEWAY, "ClickHouse did not answer the proxy").into_response();
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes: Bytes = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
