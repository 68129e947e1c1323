//! The messages of the local API, as both ends see them: a [`Request`] is
//! a method, a percent-decoded path and query, and a body (JSON, for
//! `POST`); a [`Response`] is a status, a content type and a body. The
//! agent's server reads and writes them with hyper; the client here sends
//! HTTP/1.1 (`Connection: close`) over the unix socket and reads the answer
//! with `httparse`, the parser hyper is built on, so that the CNI plugin
//! needs no async runtime.
//!
//! Requests are bounded (64 KiB body) so a stuck or hostile client cannot
//! make the server buffer without end.

use serde::Serialize;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// The most response headers the client reads.
const MAX_HEADERS: usize = 32;

/// A request, as the server routes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query, e.g. `/conntrack`.
    pub path: String,
    /// The query's `key=value` pairs in order, percent-decoded.
    pub query: Vec<(String, String)>,
    /// The body (empty without one).
    pub body: String,
}

impl Request {
    /// `method` on `target` (`/path?query`, percent-encoded as on the
    /// wire), without a body. The error says what is wrong.
    pub fn new(method: &str, target: &str) -> Result<Request, String> {
        if !target.starts_with('/') {
            return Err(format!("request target {target:?} is not a path"));
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Ok(Request {
            method: method.to_string(),
            path: percent_decode(path)?,
            query: parse_query(query)?,
            body: String::new(),
        })
    }

    /// The value of query parameter `key` (the last one if repeated).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits `a=1&b=2` into decoded pairs; a key without `=` has an empty
/// value, empty pieces (`a=1&&b=2`) are skipped.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space, as forms encode it).
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// Encodes a query value: everything but unreserved characters escaped.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response the server writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl Response {
    /// 200 with `value` as JSON.
    pub fn json<T: Serialize>(value: &T) -> Response {
        match serde_json::to_string(value) {
            Ok(body) => Response {
                status: 200,
                content_type: "application/json",
                body,
            },
            Err(e) => Response::error(500, format!("cannot encode the answer: {e}")),
        }
    }

    /// `status` with `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        let body = ErrorBody {
            error: message.into(),
        };
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_string(&body).unwrap_or_default(),
        }
    }

    /// `status` with a plain-text body.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: body.into(),
        }
    }
}

/// The request `method target` with `body` as the client sends it.
pub fn encode_request(method: &str, target: &str, body: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: podswitch-agent\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Splits a whole answer (the server closed the connection after it) into
/// status code and body, as `Content-Length` delimits it.
pub fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the answer ends inside its headers".into()),
        Err(e) => return Err(format!("malformed answer: {e}")),
    };
    let code = response.code.unwrap_or_default();
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| format!("bad Content-Length {:?}", String::from_utf8_lossy(h.value)))
        })
        .transpose()?;
    let rest = &raw[head..];
    let body = match length {
        Some(n) if n > rest.len() => {
            return Err(format!(
                "the answer announces {n} bytes of body and has {}",
                rest.len()
            ))
        }
        Some(n) => &rest[..n],
        None => rest,
    };
    let body =
        String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8".to_string())?;
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_with_a_query() {
        let r = Request::new("GET", "/conntrack?src=10.0.0.1&proto=tcp&limit=5").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/conntrack");
        assert_eq!(
            r.query,
            vec![
                ("src".into(), "10.0.0.1".into()),
                ("proto".into(), "tcp".into()),
                ("limit".into(), "5".into())
            ]
        );
        assert_eq!(r.param("proto"), Some("tcp"));
        assert_eq!(r.param("port"), None);
        assert!(Request::new("GET", "/status").unwrap().query.is_empty());
    }

    #[test]
    fn bad_targets_say_why() {
        for (target, want) in [
            ("status", "not a path"),
            ("*", "not a path"),
            ("/x?a=%zz", "bad percent escape"),
            ("/%ff", "does not decode to UTF-8"),
        ] {
            let err = Request::new("GET", target).unwrap_err();
            assert!(err.contains(want), "{target:?}: {err}");
        }
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("a=1&&b&c=x%2Fy+z").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), "x/y z".into())
            ]
        );
        assert_eq!(
            percent_decode("%4").unwrap_err(),
            "bad percent escape in \"%4\""
        );
        assert_eq!(percent_encode("10.0.0.1/x y"), "10.0.0.1%2Fx%20y");
        assert_eq!(percent_decode(&percent_encode("a&b=c")).unwrap(), "a&b=c");
    }

    #[test]
    fn answers_are_split_by_their_length() {
        let raw = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
                    content-length: 13\r\n\r\n{\"error\":\"x\"}";
        let (code, body) = parse_response(raw).unwrap();
        assert_eq!(code, 404);
        let err: ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(err.error, "x");
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokextra").unwrap(),
            (200, "ok".to_string())
        );
        for (raw, want) in [
            (&b"HTTP/1.1 200 OK\r\n"[..], "ends inside its headers"),
            (b"garbage\r\n\r\n", "malformed answer"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nok",
                "announces 9 bytes",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                "bad Content-Length",
            ),
        ] {
            let err = parse_response(raw).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn requests_are_http_1_1_and_close() {
        let raw = encode_request("POST", "/ports", "{}");
        assert!(raw.starts_with("POST /ports HTTP/1.1\r\n"), "{raw}");
        assert!(raw.contains("Connection: close\r\n"));
        assert!(raw.ends_with("Content-Length: 2\r\n\r\n{}"), "{raw}");
    }
}
