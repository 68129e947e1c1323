//! `podswitch lab serve`: the built-in server every lab pod runs, so probes
//! need no images: on each TCP port it echoes what a connection sends (one
//! thread per connection, closing after 10 s idle), on each UDP port it
//! sends every datagram back. A request of exactly [`WHOAMI`] is answered
//! with the pod's `NS/POD` instead (how `lab demo` counts which backend a
//! service picked), and a connection that opens with an HTTP request line
//! gets an HTTP/1.1 200 answer carrying the same (so `curl` works).
//!
//! Runs until SIGTERM, then ends gracefully, as a well-behaved pod does in
//! its termination grace period: it goes on accepting and answering, and
//! exits once no connection has been open for [`LINGER`] (at most
//! [`GRACE`] after the signal), so a request that reached it just before
//! the lab took it out of its services is still answered.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::LabError;

/// The request answered with the pod's identity.
pub const WHOAMI: &[u8] = b"whoami\n";
/// After SIGTERM: how long without an open connection ends the server.
const LINGER: Duration = Duration::from_millis(200);
/// After SIGTERM: the longest the server goes on.
const GRACE: Duration = Duration::from_secs(2);

/// Set by the SIGTERM handler.
static TERMINATING: AtomicBool = AtomicBool::new(false);
/// TCP connections being answered.
static OPEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATING.store(true, Ordering::Release);
}

/// Serves `tcp` and `udp` ports on every address as pod `identity`;
/// returns after SIGTERM and its grace (see the module), or on error.
pub fn serve(tcp: &[u16], udp: &[u16], identity: &str) -> Result<(), LabError> {
    let me: &'static [u8] = Box::leak(format!("{identity}\n").into_bytes().into_boxed_slice());
    let mut threads = Vec::new();
    for &port in tcp {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .map_err(|e| LabError::step(format!("listening on TCP port {port}"), e))?;
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                OPEN.fetch_add(1, Ordering::AcqRel);
                std::thread::spawn(move || {
                    echo_tcp(stream, me);
                    OPEN.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }));
    }
    for &port in udp {
        let socket = UdpSocket::bind(("0.0.0.0", port))
            .map_err(|e| LabError::step(format!("listening on UDP port {port}"), e))?;
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let answer = if &buf[..n] == WHOAMI { me } else { &buf[..n] };
                let _ = socket.send_to(answer, from);
            }
        }));
    }
    // SAFETY: installs a handler that only stores to an atomic, which is
    // async-signal-safe.
    unsafe { libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t) };
    // Serving threads run until the process ends; this one waits for the
    // signal, then for the connections. Nothing declared: the pod stays
    // up like the others.
    while !TERMINATING.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + GRACE;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && quiet_since.elapsed() < LINGER {
        if OPEN.load(Ordering::Acquire) > 0 {
            quiet_since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(threads);
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
