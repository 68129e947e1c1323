//! `podswitch lab serve`: the built-in server every lab pod runs, so probes
//! need no images: on each TCP port it echoes what a connection sends (one
//! thread per connection, closing after 10 s idle), on each UDP port it
//! sends every datagram back. A request of exactly [`WHOAMI`] is answered
//! with the pod's `NS/POD` instead (how `lab demo` counts which backend a
//! service picked), and a connection that opens with an HTTP request line
//! gets an HTTP/1.1 200 answer carrying the same (so `curl` works). Runs
//! until killed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use super::LabError;

/// The request answered with the pod's identity.
pub const WHOAMI: &[u8] = b"whoami\n";

/// Serves `tcp` and `udp` ports on every address as pod `identity`;
/// returns only on error.
pub fn serve(tcp: &[u16], udp: &[u16], identity: &str) -> Result<(), LabError> {
    let me: &'static [u8] = Box::leak(format!("{identity}\n").into_bytes().into_boxed_slice());
    let mut threads = Vec::new();
    for &port in tcp {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .map_err(|e| LabError::step(format!("listening on TCP port {port}"), e))?;
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || echo_tcp(stream, me));
            }
        }));
    }
    for &port in udp {
        let socket = UdpSocket::bind(("0.0.0.0", port))
            .map_err(|e| LabError::step(format!("listening on UDP port {port}"), e))?;
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let answer = if &buf[..n] == WHOAMI { me } else { &buf[..n] };
                let _ = socket.send_to(answer, from);
            }
        }));
    }
    if threads.is_empty() {
        // Nothing declared: stay up so the pod looks like the others.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn echo_tcp(mut stream: TcpStream, me: &[u8]) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 4096];
    let mut first = true;
    while let Ok(n) = stream.read(&mut buf) {
        if first && is_http(&buf[..n]) {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                me.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(me);
            break;
        }
        let answer = if first && &buf[..n] == WHOAMI {
            me
        } else {
            &buf[..n]
        };
        first = false;
        if n == 0 || stream.write_all(answer).is_err() {
            break;
        }
    }
}

/// Whether `data` starts with an HTTP/1.x request line.
fn is_http(data: &[u8]) -> bool {
    let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    ["GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS "]
        .iter()
        .any(|m| line.starts_with(m.as_bytes()))
        && line.windows(7).any(|w| w == b"HTTP/1.")
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_request_lines_are_recognised() {
        assert!(super::is_http(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"));
        assert!(!super::is_http(b"podswitch-lab-probe\n"));
        assert!(!super::is_http(b"GET me something\n"));
    }
}
