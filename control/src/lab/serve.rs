//! `podswitch lab serve`: the built-in server every lab pod runs, so probes
//! need no images: on each TCP port it echoes what a connection sends (one
//! thread per connection, closing after 10 s idle), on each UDP port it
//! sends every datagram back. Runs until killed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use super::LabError;

/// Serves `tcp` and `udp` ports on every address; returns only on error.
pub fn serve(tcp: &[u16], udp: &[u16]) -> Result<(), LabError> {
    let mut threads = Vec::new();
    for &port in tcp {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .map_err(|e| LabError::step(format!("listening on TCP port {port}"), e))?;
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || echo_tcp(stream));
            }
        }));
    }
    for &port in udp {
        let socket = UdpSocket::bind(("0.0.0.0", port))
            .map_err(|e| LabError::step(format!("listening on UDP port {port}"), e))?;
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
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

fn echo_tcp(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}
