//! Webhooks: each `[[webhook]]` has a bounded queue and a thread of its own that POSTs the
//! events to its URL with a blocking HTTP client (ureq, rustls for https://), a timeout per
//! attempt, and retries with exponential backoff. The event loop only queues (dropping the
//! oldest when full), so a slow, hanging or failing receiver never holds up detection or
//! mitigation, nor another webhook.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::message;
use super::RateLimitedLog;
use crate::config::{Webhook, WebhookFormat};

/// Events waiting per webhook; past this the oldest is dropped.
pub(crate) const QUEUE_CAPACITY: usize = 64;
/// The first retry waits this long, each next one twice as long…
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// …up to this (a receiver's Retry-After too).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long stopping the daemon waits for queued events to be delivered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Delivery counters of one webhook since start (for logs and metrics).
#[derive(Debug, Default)]
pub(crate) struct WebhookStats {
    /// Events delivered (a 2xx answer).
    pub(crate) sent_total: AtomicU64,
    /// Events given up on: retries exhausted, or refused for good (a 4xx answer).
    pub(crate) failed_total: AtomicU64,
    /// Attempts after a failed one.
    pub(crate) retries_total: AtomicU64,
    /// Events dropped because the queue was full.
    pub(crate) dropped_total: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook[{index}].ca_file {path}: {source}")]
    CaFile {
        index: usize,
        path: String,
        source: io::Error,
    },
    #[error("webhook[{index}].ca_file {path}: no PEM certificate in it")]
    NoCertificate { index: usize, path: String },
    #[error("starting the thread of webhook[{index}]: {source}")]
    Thread { index: usize, source: io::Error },
}

/// One event waiting for delivery.
#[derive(Debug)]
struct Delivery {
    event: &'static str,
    line: Arc<str>,
}

#[derive(Debug, Default)]
struct QueueState {
    waiting: VecDeque<Delivery>,
    /// The worker is delivering (or retrying) an event.
    busy: bool,
    closing: bool,
}

#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A worker that panicked left consistent data (a queue of strings): carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One configured webhook as the event loop sees it.
#[derive(Debug)]
struct Hook {
    label: String,
    events: Vec<&'static str>,
    queue: Arc<Queue>,
    stats: Arc<WebhookStats>,
    worker: Option<JoinHandle<()>>,
}

/// Every configured webhook.
#[derive(Debug, Default)]
pub(crate) struct Webhooks {
    hooks: Vec<Hook>,
    log: RateLimitedLog,
    /// How long dropping waits for queued events to go out.
    grace: Duration,
}

impl Webhooks {
    /// Starts one worker thread per webhook. `host` names this machine in messages.
    pub(crate) fn start(configs: &[Webhook], host: &str) -> Result<Webhooks, WebhookError> {
        let mut hooks = Vec::with_capacity(configs.len());
        for (i, config) in configs.iter().enumerate() {
            let index = i + 1;
            let client = Client::new(config, index, host)?;
            let label = format!("webhook[{index}] {}", redacted(&config.url));
            let queue = Arc::new(Queue::default());
            let stats = Arc::new(WebhookStats::default());
            let worker = {
                let (queue, stats, label) = (queue.clone(), stats.clone(), label.clone());
                std::thread::Builder::new()
                    .name(format!("webhook-{index}"))
                    .spawn(move || work(&client, &queue, &stats, &label))
                    .map_err(|source| WebhookError::Thread { index, source })?
            };
            hooks.push(Hook {
                label,
                events: config.events.clone(),
                queue,
                stats,
                worker: Some(worker),
            });
        }
        Ok(Webhooks {
            hooks,
            log: RateLimitedLog::default(),
            grace: SHUTDOWN_GRACE,
        })
    }

    /// Stops the workers without waiting (events still queued are dropped, a delivery under
    /// way ends by itself): for replacing the webhooks on SIGHUP without holding up the loop.
    pub(crate) fn stop_now(mut self) {
        self.grace = Duration::ZERO;
    }

    /// Queues `line` (event `event`) for every webhook that wants it. Never waits for a
    /// delivery; a full queue loses its oldest event.
    pub(crate) fn notify(&mut self, event: &'static str, line: &Arc<str>) {
        for hook in &self.hooks {
            if !hook.events.contains(&event) {
                continue;
            }
            let mut state = hook.queue.lock();
            if state.waiting.len() >= QUEUE_CAPACITY {
                state.waiting.pop_front();
                hook.stats.dropped_total.fetch_add(1, Ordering::Relaxed);
                self.log.warn(format_args!(
                    "{}: {QUEUE_CAPACITY} events waiting; the oldest was dropped",
                    hook.label
                ));
            }
            state.waiting.push_back(Delivery {
                event,
                line: line.clone(),
            });
            hook.queue.changed.notify_one();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Each webhook's label (`webhook[N] scheme://host/…`, no secrets) and counters.
    pub(crate) fn stats(&self) -> impl Iterator<Item = (&str, &WebhookStats)> {
        self.hooks.iter().map(|h| (h.label.as_str(), &*h.stats))
    }
}

impl Drop for Webhooks {
    /// Gives queued events a short grace period to go out, then stops the workers (one
    /// still waiting on a receiver is left to end by itself, or with the process).
    fn drop(&mut self) {
        for hook in &self.hooks {
            hook.queue.lock().closing = true;
            hook.queue.changed.notify_all();
        }
        let deadline = Instant::now() + self.grace;
        for hook in &mut self.hooks {
            let mut state = hook.queue.lock();
            while state.busy || !state.waiting.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = hook
                    .queue
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let undelivered = state.waiting.len() + usize::from(state.busy);
            drop(state);
            let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
            log::info!(
                "{}: {} events sent, {} failed, {} retries, {} dropped from a full queue, {undelivered} not delivered at stop",
                hook.label,
                count(&hook.stats.sent_total),
                count(&hook.stats.failed_total),
                count(&hook.stats.retries_total),
                count(&hook.stats.dropped_total)
            );
            if let (0, Some(worker)) = (undelivered, hook.worker.take()) {
                let _ = worker.join();
            }
        }
    }
}

/// The HTTP side of one webhook.
struct Client {
    agent: ureq::Agent,
    url: String,
    format: WebhookFormat,
    retries: u32,
    headers: Vec<(String, String)>,
    host: String,
}

/// How one attempt ended.
#[derive(Debug, PartialEq)]
enum Attempt {
    Sent,
    /// Worth trying again (after at least this long, if the receiver said so).
    Retry(String, Option<Duration>),
    /// Trying again would not help (a 4xx other than 408, 425 and 429).
    GiveUp(String),
}

impl Client {
    fn new(config: &Webhook, index: usize, host: &str) -> Result<Client, WebhookError> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &config.ca_file {
            let describe = || path.display().to_string();
            let pem = std::fs::read(path).map_err(|source| WebhookError::CaFile {
                index,
                path: describe(),
                source,
            })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(WebhookError::NoCertificate {
                    index,
                    path: describe(),
                });
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("ftagent/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .new_agent();
        Ok(Client {
            agent,
            url: config.url.clone(),
            format: config.format,
            retries: config.retries,
            headers: config.headers.clone(),
            host: host.to_string(),
        })
    }

    fn post(&self, body: &[u8]) -> Attempt {
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Ftagent-Host", &self.host);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        match request.send(body) {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                classify(status.as_u16(), retry_after)
            }
            Err(e) => Attempt::Retry(e.to_string(), None),
        }
    }
}

/// Sorts an HTTP answer: 2xx delivered; 408, 425, 429 and 5xx worth another try; the rest
/// (redirects included: a webhook URL should not move) refused for good.
fn classify(status: u16, retry_after: Option<Duration>) -> Attempt {
    match status {
        200..=299 => Attempt::Sent,
        408 | 425 | 429 | 500..=599 => Attempt::Retry(format!("HTTP {status}"), retry_after),
        _ => Attempt::GiveUp(format!("HTTP {status}")),
    }
}

/// The wait before retry number `retry` (0 for the first): 1 s, 2 s, 4 s, … up to 60 s,
/// longer if the receiver asked (Retry-After), but never past 60 s.
pub(crate) fn backoff(retry: u32, asked: Option<Duration>) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << retry.min(16));
    doubled.max(asked.unwrap_or_default()).min(MAX_BACKOFF)
}

/// A worker thread: delivers its queue's events one by one until told to close.
fn work(client: &Client, queue: &Queue, stats: &WebhookStats, label: &str) {
    let mut log = RateLimitedLog::default();
    loop {
        let delivery = {
            let mut state = queue.lock();
            state.busy = false;
            queue.changed.notify_all();
            loop {
                if let Some(d) = state.waiting.pop_front() {
                    state.busy = true;
                    break d;
                }
                if state.closing {
                    return;
                }
                state = queue.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        let body = message::body(client.format, &delivery.line, &client.host);
        let mut retry = 0;
        let failure = loop {
            let (problem, asked) = match client.post(&body) {
                Attempt::Sent => break None,
                Attempt::GiveUp(problem) => break Some(problem),
                Attempt::Retry(problem, asked) => (problem, asked),
            };
            if retry >= client.retries || closing(queue) {
                break Some(problem);
            }
            stats.retries_total.fetch_add(1, Ordering::Relaxed);
            if !pause(queue, backoff(retry, asked)) {
                break Some(problem);
            }
            retry += 1;
        };
        match failure {
            None => {
                stats.sent_total.fetch_add(1, Ordering::Relaxed);
            }
            Some(problem) => {
                let failed = stats.failed_total.fetch_add(1, Ordering::Relaxed) + 1;
                log.warn(format_args!(
                    "{label}: {} not delivered after {} attempts: {problem} ({failed} failed so far)",
                    delivery.event,
                    retry + 1
                ));
            }
        }
    }
}

fn closing(queue: &Queue) -> bool {
    queue.lock().closing
}

/// Waits `wait`, or less if the daemon stops meanwhile; false if it does.
fn pause(queue: &Queue, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut state = queue.lock();
    while !state.closing {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        state = queue
            .changed
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    false
}

/// A URL for logs: scheme, host and port only — the path of a Slack or Discord webhook is
/// its secret.
fn redacted(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(uri) => format!(
            "{}://{}/…",
            uri.scheme_str().unwrap_or("?"),
            uri.authority()
                .map_or("?", |a| a.as_str().rsplit('@').next().unwrap_or("?"))
        ),
        Err(_) => "(bad URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (0..8).map(|r| backoff(r, None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(40, None), MAX_BACKOFF);
        assert_eq!(backoff(0, Some(Duration::from_secs(10))).as_secs(), 10);
        assert_eq!(backoff(0, Some(Duration::from_secs(3600))), MAX_BACKOFF);
        assert_eq!(backoff(3, Some(Duration::from_secs(2))).as_secs(), 8);
    }

    #[test]
    fn answers_are_sorted() {
        assert_eq!(classify(204, None), Attempt::Sent);
        let slow = Some(Duration::from_secs(5));
        assert_eq!(classify(429, slow), Attempt::Retry("HTTP 429".into(), slow));
        assert_eq!(classify(503, None), Attempt::Retry("HTTP 503".into(), None));
        assert_eq!(classify(404, None), Attempt::GiveUp("HTTP 404".into()));
        assert_eq!(classify(301, None), Attempt::GiveUp("HTTP 301".into()));
    }

    #[test]
    fn logs_never_show_the_secret_path() {
        assert_eq!(
            redacted("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redacted("http://user:pw@[::1]:8080/x?t=1"),
            "http://[::1]:8080/…"
        );
    }

    /// A receiver on 127.0.0.1 answering each request with the next status of `statuses`
    /// (a status of 0: accept and never answer), reporting (path, headers, body) of each.
    fn receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<(String, String, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook/secret", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for status in statuses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let (head, body) = read_request(&stream);
                let _ = tx.send((head.lines().next().unwrap_or("").to_string(), head, body));
                if status == 0 {
                    held.push(stream);
                    continue;
                }
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
            std::thread::sleep(Duration::from_secs(3));
        });
        (url, rx)
    }

    fn read_request(stream: &TcpStream) -> (String, String) {
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        (head, String::from_utf8_lossy(&body).into_owned())
    }

    fn config(url: &str, retries: u32) -> Webhook {
        Webhook {
            url: url.to_string(),
            timeout: Duration::from_millis(500),
            retries,
            headers: vec![("Authorization".into(), "Bearer t".into())],
            events: vec!["attack_start", "attack_end"],
            ..Webhook::default()
        }
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Issue 9: a 500 is retried after the backoff and counted as a retry, then delivered; a
    /// hanging receiver times out, is retried and counted as failed; events not asked for are
    /// not sent; the event loop's side returns at once throughout.
    #[test]
    fn retries_timeouts_and_counters() {
        let (url, requests) = receiver(vec![500, 200, 0, 0]);
        let mut hooks = Webhooks::start(&[config(&url, 1)], "web1").unwrap();
        let line: Arc<str> = Arc::from(r#"{"event":"attack_start","incident":"1-1"}"#);
        let started = Instant::now();
        hooks.notify("mitigation_applied", &line);
        hooks.notify("attack_start", &line);
        hooks.notify("attack_start", &line);
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "notify never waits"
        );
        let (label, stats) = hooks.stats().next().unwrap();
        assert!(label.starts_with("webhook[1] http://127.0.0.1:"), "{label}");
        wait_for("two events settled", || {
            stats.sent_total.load(Ordering::Relaxed) + stats.failed_total.load(Ordering::Relaxed)
                == 2
        });
        let elapsed = started.elapsed();
        assert_eq!(stats.sent_total.load(Ordering::Relaxed), 1);
        assert_eq!(stats.failed_total.load(Ordering::Relaxed), 1);
        assert_eq!(stats.retries_total.load(Ordering::Relaxed), 2);
        assert_eq!(stats.dropped_total.load(Ordering::Relaxed), 0);
        // Two backoffs of 1 s and two timeouts of 0.5 s.
        assert!(elapsed >= Duration::from_millis(2900), "{elapsed:?}");
        let seen: Vec<(String, String, String)> = requests.try_iter().collect();
        assert_eq!(seen.len(), 4, "{seen:?}");
        let (first, head, body) = &seen[0];
        assert_eq!(first, "POST /hook/secret HTTP/1.1\r\n".trim_end());
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("authorization: bearer t"), "{head}");
        assert!(head.contains("x-ftagent-host: web1"), "{head}");
        assert_eq!(body, &*line);
        drop(hooks);
    }

    /// A full queue drops its oldest event and counts it.
    #[test]
    fn a_full_queue_drops_the_oldest() {
        let (url, _requests) = receiver(vec![0]);
        let mut hooks = Webhooks::start(&[config(&url, 0)], "h").unwrap();
        let stats = hooks.hooks[0].stats.clone();
        let line: Arc<str> = Arc::from("{}");
        hooks.notify("attack_start", &line);
        wait_for("the worker busy", || hooks.hooks[0].queue.lock().busy);
        for _ in 0..QUEUE_CAPACITY + 5 {
            hooks.notify("attack_end", &line);
        }
        assert_eq!(stats.dropped_total.load(Ordering::Relaxed), 5);
        assert_eq!(hooks.hooks[0].queue.lock().waiting.len(), QUEUE_CAPACITY);
        hooks.hooks[0].queue.lock().waiting.clear();
    }

    /// Replaced webhooks (SIGHUP) are stopped without waiting, even with one hanging.
    #[test]
    fn replacing_the_webhooks_waits_for_nothing() {
        let (url, _requests) = receiver(vec![0]);
        let mut hooks = Webhooks::start(&[config(&url, 0)], "h").unwrap();
        let line: Arc<str> = Arc::from("{}");
        hooks.notify("attack_start", &line);
        wait_for("the worker busy", || hooks.hooks[0].queue.lock().busy);
        hooks.notify("attack_end", &line);
        let stopping = Instant::now();
        hooks.stop_now();
        assert!(
            stopping.elapsed() < Duration::from_millis(100),
            "{:?}",
            stopping.elapsed()
        );
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let mut c = config("https://127.0.0.1/", 0);
        c.ca_file = Some("/nonexistent/ca.pem".into());
        let e = Webhooks::start(&[c.clone()], "h").unwrap_err().to_string();
        assert!(
            e.starts_with("webhook[1].ca_file /nonexistent/ca.pem: "),
            "{e}"
        );
        c.ca_file = Some("/proc/self/stat".into());
        let e = Webhooks::start(&[c], "h").unwrap_err().to_string();
        assert_eq!(
            e,
            "webhook[1].ca_file /proc/self/stat: no PEM certificate in it"
        );
    }
}
