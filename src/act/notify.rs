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

/// A Gotify base URL, split on construction so that no text is ever built from the credentials:
/// the userinfo (`user:password@`) lives only in the `Authorization` header value, and every
/// URL the HTTP library sees, and so every error it prints, is built without it.
struct BaseUrl {
    /// `scheme://host[:port]/path`, no userinfo.
    shown: String,
    /// `Basic <base64>` of the percent-decoded `user:password`, if the URL had any.
    basic_auth: Option<String>,
}

impl BaseUrl {
    fn parse(url: &str) -> BaseUrl {
        let url = url.trim();
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return BaseUrl {
                shown: url.to_string(),
                basic_auth: None,
            };
        };
        let rest = &url[scheme_end..];
        // The host is after the LAST '@': a raw '@' may sit in the password, and so may a raw
        // '/', '?' or '#' (which `validate` refuses). Whatever precedes that '@' is never shown,
        // even when it was a path: hiding too much beats printing a password.
        let (userinfo, host_and_path) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let basic_auth = userinfo
            .filter(|u| !u.is_empty())
            .map(|u| format!("Basic {}", base64(&percent_decode(u))));
        BaseUrl {
            shown: format!("{}{host_and_path}", &url[..scheme_end]),
            basic_auth,
        }
    }
}

/// Sends messages to one Gotify server.
pub struct Notifier {
    url: BaseUrl,
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
            .field("url", &self.url.shown)
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
            url: BaseUrl::parse(url),
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
        format!("{}{MESSAGE_PATH}", self.url.shown.trim_end_matches('/'))
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
        let endpoint = self.endpoint();
        let mut request = agent.post(&endpoint).set(TOKEN_HEADER, &self.token);
        if let Some(auth) = &self.url.basic_auth {
            request = request.set("Authorization", auth);
        }
        // The library's own error text is never used: it is rebuilt from the error kind and the
        // underlying cause, around the URL without credentials.
        let response = request.send_json(&body).map_err(|e| match e {
            ureq::Error::Status(code, _) => format!("gotify answered http status {code}"),
            ureq::Error::Transport(t) => {
                let cause = std::error::Error::source(&t)
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                format!("cannot reach gotify at {endpoint}: {}{cause}", t.kind())
            }
        })?;
        let status = response.status();
        if !(200..300).contains(&status) {
            return Err(format!("gotify answered http status {status}"));
        }
        Ok(())
    }

    /// `text` without the token, in case some part of it echoed the token back (the URL and the
    /// credentials never reach any text in the first place).
    fn redact(&self, text: &str) -> String {
        if self.token.is_empty() {
            return text.to_string();
        }
        text.replace(&self.token, REDACTED)
            .replace(&percent_encode(&self.token), REDACTED)
    }
}

/// `url` fit to print: without its userinfo, and without any copy of `token` (e.g. in a query).
pub fn redact_url(url: &str, token: &str) -> String {
    let shown = BaseUrl::parse(url).shown;
    if token.is_empty() {
        shown
    } else {
        shown.replace(token, REDACTED)
    }
}

/// `%XX` escapes decoded to bytes; anything else kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Every byte outside `A-Za-z0-9-._~` as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Standard base64 with padding (RFC 4648), for the `Authorization: Basic` header.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::userinfo_is_ambiguous;
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
        c.gotify_url = crate::config::Secret::default();
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
    fn redact_removes_the_token_raw_and_percent_encoded() {
        let n = Notifier::new("http://10.0.0.5:8080", "Ab/Cd+Ef");
        assert_eq!(
            n.redact("error for ?token=Ab/Cd+Ef and ?token=Ab%2FCd%2BEf"),
            "error for ?token=[redacted] and ?token=[redacted]"
        );
    }

    #[test]
    fn base_url_keeps_credentials_out_of_every_shown_form() {
        let u = BaseUrl::parse("http://admin:p@ss{w0rd}ü@host:8080/sub/");
        assert_eq!(u.shown, "http://host:8080/sub/");
        assert_eq!(
            u.basic_auth.as_deref(),
            Some(format!("Basic {}", base64("admin:p@ss{w0rd}ü".as_bytes())).as_str())
        );
        // An '@' after a '/' may end a password with a raw '/' in it: what precedes it is never
        // shown (and `validate` refuses such a URL).
        let u = BaseUrl::parse("https://u:p%40ss@h/x@y");
        assert_eq!(u.shown, "https://y");
        let u = BaseUrl::parse("https://u:p%40ss@h/x");
        assert_eq!(u.shown, "https://h/x");
        assert_eq!(u.basic_auth.as_deref(), Some("Basic dTpwQHNz"));
        let u = BaseUrl::parse("https://h");
        assert_eq!((u.shown.as_str(), u.basic_auth), ("https://h", None));
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn password_in_url_never_reaches_the_failure_text_in_any_encoding() {
        let password = "p@ss{w0rd}ü";
        let addr = closed_port_url();
        let url = format!(
            "http://admin:{password}@{}/",
            addr.trim_start_matches("http://")
        );
        let n = Notifier::new(&url, "s3cr3t-token");
        let reason = n.post("t", "m", 5).unwrap_err();
        assert!(
            reason.starts_with(&format!(
                "cannot reach gotify at {addr}/message: Connection Failed: "
            )),
            "{reason}"
        );
        for secret in [
            password.to_string(),
            percent_encode(password),
            "p%40ss%7Bw0rd%7D%C3%BC".to_string(),
            base64(format!("admin:{password}").as_bytes()),
            base64(format!("admin:{}", percent_encode(password)).as_bytes()),
            "s3cr3t-token".to_string(),
            "admin".to_string(),
        ] {
            assert!(!reason.contains(&secret), "{secret} in {reason}");
            assert!(!format!("{n:?}").contains(&secret), "{secret} in debug");
        }
    }

    #[test]
    fn password_with_a_raw_slash_question_mark_or_hash_never_reaches_any_text() {
        let addr = closed_port_url();
        for password in ["pa/ss", "pa?ss", "pa#ss", "p/a@s?s#"] {
            let url = format!(
                "http://admin:{password}@{}/",
                addr.trim_start_matches("http://")
            );
            assert!(userinfo_is_ambiguous(&url), "{password}");
            let n = Notifier::new(&url, "s3cr3t-token");
            let reason = n.post("t", "m", 5).unwrap_err();
            for shown in [reason, format!("{n:?}"), redact_url(&url, "s3cr3t-token")] {
                assert!(!shown.contains(password), "{password} in {shown}");
                assert!(!shown.contains("admin"), "user name in {shown}");
            }
        }
    }

    #[test]
    fn config_sees_credentials_exactly_where_a_basic_auth_header_is_sent() {
        for url in [
            "https://admin:pw@g.example/",
            "https://admin@g.example",
            "https://@g.example",
            "https://g.example/",
            "http://a:b/c@host/",
            "g.example",
            "",
        ] {
            assert_eq!(
                crate::config::url_has_credentials(url),
                BaseUrl::parse(url).basic_auth.is_some(),
                "{url}"
            );
        }
    }

    #[test]
    fn only_an_at_sign_after_a_slash_question_mark_or_hash_is_ambiguous() {
        for url in [
            "http://gotify.lan/",
            "https://admin:p%2Fss@gotify.lan:8080/base",
            "http://admin:p@ss@gotify.lan/",
            "http://gotify.lan",
            "",
        ] {
            assert!(!userinfo_is_ambiguous(url), "{url}");
        }
        for url in [
            "http://a:b/c@host/",
            "http://host/path@x",
            "http://a:b?c@host",
        ] {
            assert!(userinfo_is_ambiguous(url), "{url}");
        }
    }

    #[test]
    fn url_credentials_go_in_a_basic_auth_header_with_the_decoded_password() {
        let (url, rx) = serve_once("200 OK");
        let with_auth = url.replace("http://", "http://admin:p%40ss{w0rd}ü@");
        let mut n = Notifier::new(&with_auth, "tok");
        assert!(n.send("t", "m", 5));
        let seen = rx.recv().unwrap();
        assert_eq!(seen.request_line, "POST /message HTTP/1.1");
        assert_eq!(
            seen.header("Authorization"),
            Some(format!("Basic {}", base64("admin:p@ss{w0rd}ü".as_bytes())).as_str())
        );
    }
}
