//! The HTTP/1.0 subset the local API speaks, both ends: a request is one
//! request line (`GET /path?query HTTP/1.0`), headers of which only
//! `Content-Length` is read, and that many bytes of body (JSON, for
//! `POST`); a response is a status line, `Content-Type`, `Content-Length`
//! and the body, after which the server closes the connection.
//!
//! Requests are bounded (8 KiB request line, 100 headers, 64 KiB body) so a
//! stuck or hostile client cannot make the server buffer without end.

use std::io::{self, BufRead, Read, Write};

use serde::Serialize;

/// The longest request line, and header line, accepted.
const MAX_LINE: u64 = 8 * 1024;
/// The most header lines read before the request is refused.
const MAX_HEADERS: usize = 100;
/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query, e.g. `/conntrack`.
    pub path: String,
    /// The query's `key=value` pairs in order, percent-decoded.
    pub query: Vec<(String, String)>,
    /// The body (empty without `Content-Length`).
    pub body: String,
}

impl Request {
    /// Parses a request line (`GET /path?query HTTP/1.0`, with or without
    /// the line end). The error says what is wrong.
    pub fn parse(line: &str) -> Result<Request, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "malformed request line {line:?}: expected `METHOD /path HTTP/1.0`"
            ));
        };
        if !version.starts_with("HTTP/1.") {
            return Err(format!(
                "unsupported protocol {version:?}: expected HTTP/1.0"
            ));
        }
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

    /// Reads one request from `reader`: the request line, headers up to the
    /// blank line (only `Content-Length` is used), then the body. Errors of
    /// the stream are `Err(Err(_))`; a request that cannot be understood is
    /// `Err(Ok(message))`.
    pub fn read(reader: &mut impl BufRead) -> Result<Request, Result<String, io::Error>> {
        let first = read_line(reader).map_err(Err)?;
        let mut request = Request::parse(&first).map_err(Ok)?;
        let mut length = 0usize;
        for _ in 0..MAX_HEADERS {
            let line = read_line(reader).map_err(Err)?;
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if length > 0 {
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).map_err(Err)?;
                    request.body = String::from_utf8(body)
                        .map_err(|_| Ok("the request body is not UTF-8".to_string()))?;
                }
                return Ok(request);
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-length") {
                    length = value
                        .trim()
                        .parse()
                        .map_err(|_| Ok(format!("bad Content-Length {:?}", value.trim())))?;
                    if length > MAX_BODY {
                        return Err(Ok(format!(
                            "request body of {length} bytes exceeds the limit of {MAX_BODY}"
                        )));
                    }
                }
            }
        }
        Err(Ok(format!("more than {MAX_HEADERS} header lines")))
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

/// One line of at most [`MAX_LINE`] bytes; the end of the stream counts as
/// the end of the line (and of the headers).
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    reader.take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if buf.len() as u64 >= MAX_LINE && buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request line longer than 8 KiB",
        ));
    }
    String::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
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

    /// Writes the status line, headers and body.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        write!(
            out,
            "HTTP/1.0 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n{}",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            self.body
        )?;
        out.flush()
    }
}

/// The reason phrase of the status codes the API uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Splits a whole response into status code and body (client side).
pub fn parse_response(raw: &str) -> Result<(u16, &str), String> {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| "the answer has no end of headers".to_string())?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("malformed status line {status_line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("malformed status line {status_line:?}"));
    }
    let code = code
        .parse()
        .map_err(|_| format!("malformed status line {status_line:?}"))?;
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn request_line_with_query() {
        let r =
            Request::parse("GET /conntrack?src=10.0.0.1&proto=tcp&limit=5 HTTP/1.0\r\n").unwrap();
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
        let r = Request::parse("GET /status HTTP/1.1").unwrap();
        assert!(r.query.is_empty());
    }

    #[test]
    fn malformed_request_lines_say_why() {
        for (line, want) in [
            ("GET /status", "malformed request line"),
            ("GET /a b HTTP/1.0", "malformed request line"),
            ("", "malformed request line"),
            ("GET /status SPDY/3", "unsupported protocol"),
            ("GET status HTTP/1.0", "not a path"),
            ("GET /x?a=%zz HTTP/1.0", "bad percent escape"),
        ] {
            let err = Request::parse(line).unwrap_err();
            assert!(err.contains(want), "{line:?}: {err}");
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
    fn reads_request_and_skips_headers() {
        let mut input =
            Cursor::new(b"GET /routes HTTP/1.0\r\nHost: x\r\nAccept: */*\r\n\r\n".to_vec());
        let r = Request::read(&mut input).unwrap();
        assert_eq!(r.path, "/routes");
        // A client that closes after the request line is fine too.
        let mut input = Cursor::new(b"GET /routes HTTP/1.0\r\n".to_vec());
        assert!(Request::read(&mut input).is_ok());
        let mut input = Cursor::new(
            b"POST /ports HTTP/1.0\r\ncontent-length: 7\r\n\r\n{\"a\":1}trailing".to_vec(),
        );
        let r = Request::read(&mut input).unwrap();
        assert_eq!((r.method.as_str(), r.body.as_str()), ("POST", "{\"a\":1}"));
        let mut input = Cursor::new(b"POST /ports HTTP/1.0\r\nContent-Length: x\r\n\r\n".to_vec());
        assert!(matches!(Request::read(&mut input), Err(Ok(m)) if m.contains("Content-Length")));
        let big = format!(
            "POST /ports HTTP/1.0\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(Request::read(&mut Cursor::new(big)), Err(Ok(m)) if m.contains("limit")));
        let mut input = Cursor::new(b"BOGUS\r\n\r\n".to_vec());
        assert!(matches!(Request::read(&mut input), Err(Ok(_))));
        let mut long = b"GET /".to_vec();
        long.extend(vec![b'a'; 9000]);
        assert!(matches!(Request::read(&mut Cursor::new(long)), Err(Err(_))));
        let mut many = b"GET / HTTP/1.0\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"X: y\r\n");
        }
        assert!(matches!(Request::read(&mut Cursor::new(many)), Err(Ok(_))));
    }

    #[test]
    fn responses_round_trip() {
        let mut out = Vec::new();
        Response::error(404, "no such endpoint: /x")
            .write_to(&mut out)
            .unwrap();
        let raw = String::from_utf8(out).unwrap();
        assert!(raw.starts_with("HTTP/1.0 404 Not Found\r\n"));
        let (code, body) = parse_response(&raw).unwrap();
        assert_eq!(code, 404);
        let err: ErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(err.error, "no such endpoint: /x");
        let mut out = Vec::new();
        Response::text(200, "ok").write_to(&mut out).unwrap();
        let raw = String::from_utf8(out).unwrap();
        assert!(raw.contains("Content-Length: 2\r\n"));
        assert_eq!(parse_response(&raw).unwrap(), (200, "ok"));
        assert!(parse_response("HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse_response("garbage\r\n\r\n").is_err());
    }
}
