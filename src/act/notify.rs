//! Gotify notifications. The token travels only in the `X-Gotify-Key` header.
//!
//! Notifications are best effort: a failed send is logged once (until Gotify answers again) and
//! never stops a cycle.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;

/// Whole-request limit of one send, connect included.
pub const GOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// Header that carries the application token (keeps it out of URLs and access logs).
const TOKEN_HEADER: &str = "X-Gotify-Key";
/// Gotify's message endpoint, under the configured base URL.
const MESSAGE_PATH: &str = "/message";
const REDACTED: &str = "[redacted]";

/// Sends messages to one Gotify server.
pub struct Notifier {
    url: String,
    /// Secret: never logged, never in `Debug`.
    token: String,
    timeout: Duration,
    /// The last send failed; the next failure is not logged again.
    down: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    title: &'a str,
    message: &'a str,
    priority: u8,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("url", &redact_userinfo(&self.url))
            .field("token", &REDACTED)
            .field("timeout", &self.timeout)
            .field("down", &self.down)
            .finish()
    }
}

impl Notifier {
    /// A notifier for `gotify_url` with `gotify_token`, or `None` unless both are set.
    pub fn from_config(config: &Config) -> Option<Notifier> {
        if !config.gotify_enabled() {
            return None;
        }
        Some(Notifier::new(&config.gotify_url, &config.gotify_token))
    }

    /// A notifier for the Gotify server at base `url` (with or without a trailing `/`).
    pub fn new(url: &str, token: &str) -> Notifier {
        Notifier {
            url: url.trim().to_string(),
            token: token.trim().to_string(),
            timeout: GOTIFY_TIMEOUT,
            down: false,
        }
    }

    /// Replaces the whole-request timeout (default `GOTIFY_TIMEOUT`).
    pub fn with_timeout(mut self, timeout: Duration) -> Notifier {
        self.timeout = timeout;
        self
    }

    /// Whether the last send failed.
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// The URL messages are posted to.
    fn endpoint(&self) -> String {
        format!("{}{MESSAGE_PATH}", self.url.trim_end_matches('/'))
    }

    /// Posts one message. Returns whether Gotify accepted it. Never panics and never fails the
    /// caller: the first failure after a success is logged as a warning, later ones are not, and
    /// the first success after failures is logged.
    pub fn send(&mut self, title: &str, message: &str, priority: u8) -> bool {
        match self.post(title, message, priority) {
            Ok(()) => {
                if self.down {
                    tracing::info!("gotify reachable again");
                    self.down = false;
                }
                true
            }
            Err(reason) => {
                if !self.down {
                    tracing::warn!(
                        "gotify notification failed, further failures are not logged until it answers: {}",
                        self.redact(&reason)
                    );
                    self.down = true;
                }
                false
            }
        }
    }

    fn post(&self, title: &str, message: &str, priority: u8) -> Result<(), String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(self.timeout)
            // A redirect could carry the token header to another host.
            .redirects(0)
            .build();
        let body = Message {
            title,
            message,
            priority,
        };
        let response = agent
            .post(&self.endpoint())
            .set(TOKEN_HEADER, &self.token)
            .send_json(&body)
            .map_err(|e| match e {
                ureq::Error::Status(code, _) => format!("gotify answered http status {code}"),
                ureq::Error::Transport(t) => format!("cannot reach gotify: {t}"),
            })?;
        let status = response.status();
        if !(200..300).contains(&status) {
            return Err(format!("gotify answered http status {status}"));
        }
        Ok(())
    }

    /// `text` without the token or any password in the URL.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        if !self.token.is_empty() {
            out = out.replace(&self.token, REDACTED);
        }
        if let Some(userinfo) = userinfo_of(&self.url) {
            out = out.replace(userinfo, REDACTED);
        }
        out
    }
}

/// The `user:password` part of `scheme://user:password@host/...`, if any.
fn userinfo_of(url: &str) -> Option<&str> {
    let after_scheme = &url[url.find("://")? + 3..];
    let authority = after_scheme.split(['/', '?', '#']).next()?;
    let at = authority.rfind('@')?;
    Some(&authority[..at]).filter(|u| !u.is_empty())
}

/// `url` fit to print: no password in its userinfo, and no copy of `token` (e.g. in a query).
pub fn redact_url(url: &str, token: &str) -> String {
    let url = redact_userinfo(url);
    if token.is_empty() {
        url
    } else {
        url.replace(token, REDACTED)
    }
}

fn redact_userinfo(url: &str) -> String {
    match userinfo_of(url) {
        Some(userinfo) => url.replacen(userinfo, REDACTED, 1),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::thread;

    /// A request as the test server saw it.
    #[derive(Debug)]
    struct Seen {
        request_line: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn read_request(stream: &TcpStream) -> Seen {
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        Seen {
            request_line: request_line.trim_end().to_string(),
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }

    /// Serves one request with `status`, and hands what it saw to the test.
    fn serve_once(status: &'static str) -> (String, mpsc::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let seen = read_request(&stream);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
            let _ = tx.send(seen);
        });
        (url, rx)
    }

    fn closed_port_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }

    #[test]
    fn posts_json_message_with_token_header() {
        let (url, rx) = serve_once("200 OK");
        let mut n = Notifier::new(&format!("{url}/"), "s3cr3t-token");
        assert!(n.send("lxc_autoscale on pve1", "CT 101: cores 2 -> 3", 5));
        let seen = rx.recv().unwrap();
        assert_eq!(seen.request_line, "POST /message HTTP/1.1");
        assert_eq!(seen.header("X-Gotify-Key"), Some("s3cr3t-token"));
        assert!(seen
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "title": "lxc_autoscale on pve1",
                "message": "CT 101: cores 2 -> 3",
                "priority": 5
            })
        );
        assert!(!seen.body.contains("s3cr3t-token"));
        assert!(!n.is_down());
    }

    #[test]
    fn url_with_a_path_keeps_it_before_message() {
        let n = Notifier::new("https://gotify.example/sub/", "t");
        assert_eq!(n.endpoint(), "https://gotify.example/sub/message");
        let n = Notifier::new("https://gotify.example", "t");
        assert_eq!(n.endpoint(), "https://gotify.example/message");
    }

    #[test]
    fn server_error_is_a_failed_send() {
        let (url, rx) = serve_once("500 Internal Server Error");
        let mut n = Notifier::new(&url, "t");
        assert!(!n.send("t", "m", 5));
        assert!(n.is_down());
        rx.recv().unwrap();
    }

    #[test]
    fn redirect_is_not_followed_and_counts_as_failure() {
        let (url, rx) = serve_once("307 Temporary Redirect");
        let mut n = Notifier::new(&url, "t");
        assert!(!n.send("t", "m", 5));
        rx.recv().unwrap();
    }

    #[test]
    fn closed_port_is_a_failed_send() {
        let mut n = Notifier::new(&closed_port_url(), "t");
        assert!(!n.send("t", "m", 5));
        assert!(n.is_down());
    }

    #[test]
    fn silent_server_is_a_failed_send_after_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (done_tx, done_rx) = mpsc::channel::<()>();
        thread::spawn(move || {
            let (_stream, _) = listener.accept().unwrap();
            // Hold the connection open without answering until the test is over.
            let _ = done_rx.recv();
        });
        let mut n = Notifier::new(&url, "t").with_timeout(Duration::from_millis(300));
        assert!(!n.send("t", "m", 5));
        let _ = done_tx.send(());
    }

    #[test]
    fn success_after_failure_clears_down() {
        let (url, rx) = serve_once("200 OK");
        let mut n = Notifier::new(&url, "t");
        n.down = true;
        assert!(n.send("t", "m", 5));
        assert!(!n.is_down());
        rx.recv().unwrap();
    }

    #[test]
    fn from_config_needs_url_and_token() {
        let mut c = Config::default();
        assert!(Notifier::from_config(&c).is_none());
        c.gotify_url = "https://gotify.example".into();
        assert!(Notifier::from_config(&c).is_none());
        c.gotify_token = "tok".into();
        let n = Notifier::from_config(&c).unwrap();
        assert_eq!(n.endpoint(), "https://gotify.example/message");
        c.gotify_url.clear();
        assert!(Notifier::from_config(&c).is_none());
        c.gotify_url = "https://gotify.example".into();
        c.gotify_token = " \t".into();
        assert!(Notifier::from_config(&c).is_none());
        assert!(
            !c.gotify_enabled(),
            "check-config must agree with the notifier"
        );
    }

    #[test]
    fn debug_hides_token_and_url_password() {
        let n = Notifier::new("https://user:pw@gotify.example/", "s3cr3t-token");
        let shown = format!("{n:?}");
        assert!(!shown.contains("s3cr3t-token"), "{shown}");
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains("gotify.example"), "{shown}");
    }

    #[test]
    fn redact_removes_token_and_url_credentials() {
        let n = Notifier::new("http://admin:hunter2@10.0.0.5:8080", "AbCdEf");
        assert_eq!(
            n.redact("error for http://admin:hunter2@10.0.0.5:8080/message?token=AbCdEf"),
            "error for http://[redacted]@10.0.0.5:8080/message?token=[redacted]"
        );
    }

    #[test]
    fn userinfo_is_found_only_in_the_authority() {
        assert_eq!(userinfo_of("https://u:p@h/x"), Some("u:p"));
        assert_eq!(userinfo_of("https://h/x@y"), None);
        assert_eq!(userinfo_of("https://h"), None);
    }
}
