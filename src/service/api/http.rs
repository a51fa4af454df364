//! A small HTTP/1.1 layer: one request per connection, `Content-Length` bodies only, every
//! response closes the connection. Enough for curl, scripts and the ML sibling's clients.

use std::io::Read;
use std::sync::Arc;

/// Request line and headers together may not exceed this.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A JSON body may not exceed this (413 above).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One parsed request. The query string is kept apart from the path and never logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Decoded `name=value` pairs of the query string, in order.
    pub query: Vec<(String, String)>,
    /// Header names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// HTTP/1.1 or later: only such a client is sent `100 Continue`.
    pub http11: bool,
}

impl Request {
    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `Expect: 100-continue` from an HTTP/1.1 client: it waits for `100 Continue` (or the final
    /// answer) before it sends the body. An HTTP/1.0 client's expectation is ignored (RFC 9110).
    pub fn expects_continue(&self) -> bool {
        self.http11
            && self
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read; each maps to a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed or timed out before a whole request arrived: nothing to answer.
    Gone,
    /// 400 with this message.
    Malformed(&'static str),
    /// 413: the declared body is larger than `MAX_BODY_BYTES`.
    TooLarge,
    /// 431: the head is larger than `MAX_HEAD_BYTES`.
    HeadTooLarge,
}

/// The head: request line, then header lines, without the blank line.
pub fn parse_head(head: &str) -> Result<Request, ReadError> {
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Malformed("bad request line"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(ReadError::Malformed("bad request line"));
    }
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ReadError::Malformed("bad method"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.to_string(),
        path: percent_decode(path).ok_or(ReadError::Malformed("bad path encoding"))?,
        query: parse_query(query).ok_or(ReadError::Malformed("bad query string"))?,
        http11: version != "HTTP/1.0",
        ..Request::default()
    };
    for l in lines.filter(|l| !l.is_empty()) {
        let (name, value) = l
            .split_once(':')
            .ok_or(ReadError::Malformed("bad header line"))?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(ReadError::Malformed("bad header name"));
        }
        req.headers
            .push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(req)
}

/// `a=1&b=x%20y` into pairs; `None` on a bad escape.
pub fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&v.replace('+', " "))?,
            ))
        })
        .collect()
}

/// Decodes `%XX` escapes; `None` on a bad escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The declared body length: 0 without the header; chunked bodies are refused.
pub fn body_length(req: &Request) -> Result<usize, ReadError> {
    if req.header("transfer-encoding").is_some() {
        return Err(ReadError::Malformed(
            "chunked bodies are not supported: send Content-Length",
        ));
    }
    let Some(v) = req.header("content-length") else {
        return Ok(0);
    };
    let n: u64 = v
        .parse()
        .map_err(|_| ReadError::Malformed("bad Content-Length"))?;
    if n > MAX_BODY_BYTES as u64 {
        return Err(ReadError::TooLarge);
    }
    Ok(n as usize)
}

/// The interim answer to `Expect: 100-continue`: the request is acceptable so far, send the body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Reads the head up to the blank line. Returns the request without its body and the bytes that
/// came after the head (the start of the body).
pub fn read_head(r: &mut impl Read) -> Result<(Request, Vec<u8>), ReadError> {
    read_head_after(r, Vec::with_capacity(1024))
}

/// `read_head` when the request's first bytes were already read (`buf`).
pub fn read_head_after(
    r: &mut impl Read,
    mut buf: Vec<u8>,
) -> Result<(Request, Vec<u8>), ReadError> {
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = find_blank_line(&buf) {
            break i;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(ReadError::HeadTooLarge);
        }
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(ReadError::Gone),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ReadError::Malformed("head"))?;
    let req = parse_head(head)?;
    Ok((req, buf.split_off(head_end + 4)))
}

/// The request when `bytes` are exactly a whole, valid head with no body after it and none
/// declared; `None` for anything else (more to read, a body, an error to answer), which the full
/// reader then handles.
pub fn complete_head_without_body(bytes: &[u8]) -> Option<Request> {
    let end = find_blank_line(bytes)?;
    if end + 4 != bytes.len() {
        return None;
    }
    let req = parse_head(std::str::from_utf8(&bytes[..end]).ok()?).ok()?;
    (body_length(&req) == Ok(0)).then_some(req)
}

/// Reads the rest of a `len`-byte body whose first bytes (`early`) came with the head.
pub fn read_body(
    r: &mut impl Read,
    req: &mut Request,
    mut early: Vec<u8>,
    len: usize,
) -> Result<(), ReadError> {
    if early.len() < len {
        let mut rest = vec![0u8; len - early.len()];
        r.read_exact(&mut rest).map_err(|_| ReadError::Gone)?;
        early.extend_from_slice(&rest);
    }
    early.truncate(len);
    req.body = early;
    Ok(())
}

/// Reads one whole request: the head, then exactly the declared body.
pub fn read_request(r: &mut impl Read) -> Result<Request, ReadError> {
    let (mut req, early) = read_head(r)?;
    let len = body_length(&req)?;
    read_body(r, &mut req, early, len)?;
    Ok(req)
}

/// Whether the whole head (up to its blank line) is in `bytes`.
pub fn head_arrived(bytes: &[u8]) -> bool {
    find_blank_line(bytes).is_some()
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// A response: status, extra headers, JSON or text body. A body the loop published is shared,
/// not copied: a large `GET /containers` costs no allocation per request.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Arc<String>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::shared(status, "application/json", Arc::new(value.to_string()))
    }

    pub fn shared(status: u16, content_type: &'static str, body: Arc<String>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// The status line and headers, with the blank line.
    pub fn head(&self) -> String {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out
    }

    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = self.head().into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_line_query_and_headers() {
        let r = parse_head(
            "GET /resource/lxc/status?lxc_id=101&x=a%20b HTTP/1.1\r\nHost: x\r\nX-API-Key:  k ",
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/resource/lxc/status");
        assert_eq!(r.query_param("lxc_id"), Some("101"));
        assert_eq!(r.query_param("x"), Some("a b"));
        assert_eq!(r.header("x-api-key"), Some("k"));
    }

    #[test]
    fn refuses_garbled_request_lines() {
        for head in [
            "GET",
            "GET / HTTP/1.1 x",
            "get / HTTP/1.1",
            "GET x HTTP/1.1",
            "GET / FTP/1",
        ] {
            assert!(
                matches!(parse_head(head), Err(ReadError::Malformed(_))),
                "{head}"
            );
        }
        assert!(parse_head("GET /%zz HTTP/1.1").is_err());
        assert!(parse_head("GET / HTTP/1.1\r\nno colon").is_err());
    }

    #[test]
    fn reads_exactly_the_declared_body() {
        let raw = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let r = read_request(&mut &raw[..]).unwrap();
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn body_above_64_kib_is_too_large_before_it_is_read() {
        let raw = format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 10 << 20);
        assert_eq!(read_request(&mut raw.as_bytes()), Err(ReadError::TooLarge));
        let raw = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            read_request(&mut &raw[..]),
            Err(ReadError::Malformed(_))
        ));
    }

    #[test]
    fn only_an_http11_client_expecting_100_continue_is_sent_it() {
        let head = |v: &str, e: &str| parse_head(&format!("POST /a {v}\r\nExpect: {e}")).unwrap();
        assert!(head("HTTP/1.1", "100-continue").expects_continue());
        assert!(head("HTTP/1.1", "100-Continue").expects_continue());
        assert!(!head("HTTP/1.0", "100-continue").expects_continue());
        assert!(!head("HTTP/1.1", "something-else").expects_continue());
        assert!(!parse_head("POST /a HTTP/1.1").unwrap().expects_continue());
    }

    #[test]
    fn head_is_read_without_waiting_for_the_body() {
        let raw = b"POST /a HTTP/1.1\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\nhi";
        let (req, early) = read_head(&mut &raw[..]).unwrap();
        assert_eq!(req.path, "/a");
        assert!(req.body.is_empty());
        assert_eq!(early, b"hi");
    }

    #[test]
    fn only_a_whole_bodiless_head_is_complete() {
        let get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(complete_head_without_body(get).unwrap().path, "/health");
        let zero = b"GET /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(complete_head_without_body(zero).unwrap().path, "/health");
        for partial in [
            &b"GET /health HTTP/1.1\r\nHost: x\r\n"[..],
            b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                complete_head_without_body(partial),
                None,
                "{}",
                String::from_utf8_lossy(partial)
            );
        }
    }

    #[test]
    fn head_read_goes_on_from_bytes_already_read() {
        let first = b"GET /a?x=1 HTTP/1.1\r\nHo".to_vec();
        let (req, early) = read_head_after(&mut &b"st: y\r\n\r\nzz"[..], first).unwrap();
        assert_eq!((req.path.as_str(), req.header("host")), ("/a", Some("y")));
        assert_eq!(early, b"zz");
    }

    #[test]
    fn truncated_request_is_gone() {
        let raw = b"POST /a HTTP/1.1\r\nContent-Length: 9\r\n\r\nhi";
        assert_eq!(read_request(&mut &raw[..]), Err(ReadError::Gone));
        assert_eq!(read_request(&mut &b"GET / HT"[..]), Err(ReadError::Gone));
    }

    #[test]
    fn response_closes_and_counts_its_body() {
        let r = Response::json(429, &serde_json::json!({"a": 1}))
            .with_header("Retry-After", "7".into());
        let text = String::from_utf8(r.encode()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 7\r\nConnection: close\r\nRetry-After: 7\r\n\r\n{\"a\":1}"
        );
    }
}
