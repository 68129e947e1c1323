//! The DNS server: one UDP thread and one TCP accept thread (plus a thread
//! per TCP connection) on the node address, port 53, answering from the
//! current [`Zone`].
//!
//! [`handle`] turns one query into its reply (or nothing) without any I/O,
//! so the message handling is tested without sockets. Bad input never
//! panics: a message that does not parse is answered FORMERR when its
//! header could be read and dropped otherwise; both are counted.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use api::DnsStats;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use tables::model::Cidr;

use super::zone::{Data, Lookup, SharedZone, Zone};

/// TTL of the answers (CoreDNS's kubernetes plugin default).
pub const TTL: u32 = 5;
/// The UDP reply limit without EDNS (RFC 1035).
const PLAIN_UDP_LIMIT: usize = 512;
/// The EDNS buffer size this server advertises and honours at most.
const EDNS_LIMIT: u16 = 1232;
/// How long an upstream has to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle TCP connection is closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often the threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {proto} {addr}: {source} (is another DNS server bound to port 53?)")]
    Bind {
        proto: &'static str,
        addr: SocketAddrV4,
        source: std::io::Error,
    },
}

/// Who the server answers: pods (the cluster CIDR), the node itself and
/// loopback, as the agent sets it. The server listens on the node's
/// address, which the underlay reaches too: it is no resolver for them.
#[derive(Clone, Debug)]
pub struct Clients(Vec<Cidr>);

impl Clients {
    /// Clients from `cidrs`.
    pub fn new(cidrs: Vec<Cidr>) -> Clients {
        Clients(cidrs)
    }

    /// The agent's clients: `cluster`, `node_ip` and 127.0.0.0/8.
    pub fn of_node(cluster: Cidr, node_ip: Ipv4Addr) -> Clients {
        let mut cidrs = vec![cluster];
        cidrs.extend(Cidr::new(node_ip, 32));
        cidrs.extend(Cidr::new(Ipv4Addr::LOCALHOST, 8));
        Clients(cidrs)
    }

    fn allows(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.0.iter().any(|c| c.contains(u32::from(ip))),
            IpAddr::V6(_) => false,
        }
    }
}

/// The live counters behind [`DnsStats`].
#[derive(Debug, Default)]
pub struct Counters {
    queries: AtomicU64,
    noerror: AtomicU64,
    nodata: AtomicU64,
    nxdomain: AtomicU64,
    refused: AtomicU64,
    formerr: AtomicU64,
    servfail: AtomicU64,
    notimp: AtomicU64,
    dropped: AtomicU64,
    truncated: AtomicU64,
    forwarded: AtomicU64,
    outside: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// The counts now.
    pub fn stats(&self) -> DnsStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsStats {
            queries: get(&self.queries),
            noerror: get(&self.noerror),
            nodata: get(&self.nodata),
            nxdomain: get(&self.nxdomain),
            refused: get(&self.refused),
            formerr: get(&self.formerr),
            servfail: get(&self.servfail),
            notimp: get(&self.notimp),
            dropped: get(&self.dropped),
            truncated: get(&self.truncated),
            forwarded: get(&self.forwarded),
            outside: get(&self.outside),
        }
    }

    fn count_reply(&self, reply: &Message) {
        let c = match reply.metadata.response_code {
            ResponseCode::NoError if reply.answers.is_empty() => &self.nodata,
            ResponseCode::NoError => &self.noerror,
            ResponseCode::NXDomain => &self.nxdomain,
            ResponseCode::Refused => &self.refused,
            ResponseCode::FormErr => &self.formerr,
            ResponseCode::NotImp => &self.notimp,
            _ => &self.servfail,
        };
        bump(c);
    }
}

/// How a query came in: UDP replies are cut to the client's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with one received message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// A name outside the cluster domain, and an upstream is configured:
    /// send the query there and its answer back.
    Forward,
    /// Send nothing (counted).
    Drop,
}

/// The reply to the message `bytes` from `zone`. `forward`: whether names
/// outside the zone go upstream (else REFUSED).
pub fn handle(
    zone: &Zone,
    bytes: &[u8],
    transport: Transport,
    forward: bool,
    counters: &Counters,
) -> Outcome {
    bump(&counters.queries);
    let query = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => {
            // Answer FORMERR if at least the header (and with it the id)
            // is there; otherwise there is nobody to answer.
            let Some(id) = bytes.get(..12).map(|h| u16::from_be_bytes([h[0], h[1]])) else {
                bump(&counters.dropped);
                return Outcome::Drop;
            };
            if bytes[2] & 0x80 != 0 {
                bump(&counters.dropped);
                return Outcome::Drop;
            }
            let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return encode(&reply, counters);
        }
    };
    if query.metadata.message_type != MessageType::Query {
        bump(&counters.dropped);
        return Outcome::Drop;
    }
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = forward;
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_LIMIT);
        reply.set_edns(edns);
    }
    let question = match query.queries.as_slice() {
        [q] => q.clone(),
        _ => {
            reply.metadata.response_code = ResponseCode::FormErr;
            return encode(&reply, counters);
        }
    };
    reply.add_query(question.clone());
    if query.metadata.op_code != OpCode::Query {
        reply.metadata.response_code = ResponseCode::NotImp;
        return encode(&reply, counters);
    }
    let name = question.name().to_ascii();
    let lookup = match question.query_class() {
        DNSClass::IN | DNSClass::ANY => zone.lookup(&name, question.query_type()),
        _ if zone.contains(&name) => Lookup::NoData,
        _ => Lookup::OutOfZone,
    };
    match lookup {
        Lookup::OutOfZone if forward => {
            bump(&counters.forwarded);
            return Outcome::Forward;
        }
        Lookup::OutOfZone => reply.metadata.response_code = ResponseCode::Refused,
        Lookup::NxDomain => {
            reply.metadata.authoritative = true;
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.add_authorities(soa(zone));
        }
        Lookup::NoData => {
            reply.metadata.authoritative = true;
            if zone.contains(&name) {
                reply.add_authorities(soa(zone));
            }
        }
        Lookup::Answer(list) => {
            reply.metadata.authoritative = true;
            fill(zone, &question, &list, &mut reply);
        }
    }
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => query.edns.as_ref().map_or(PLAIN_UDP_LIMIT, |e| {
            usize::from(e.max_payload().clamp(512, EDNS_LIMIT))
        }),
    };
    match encode(&reply, counters) {
        Outcome::Reply(bytes) if bytes.len() > limit => {
            bump(&counters.truncated);
            // The counted reply stands; the truncated one is not counted
            // again.
            match reply.truncate().to_vec() {
                Ok(bytes) => Outcome::Reply(bytes),
                Err(_) => Outcome::Drop,
            }
        }
        other => other,
    }
}

/// Puts `list` (records of the question's name) in the answer section, and
/// the addresses of SRV targets in the additional section.
fn fill(zone: &Zone, question: &Query, list: &[Data], reply: &mut Message) {
    let owner = question.name().clone();
    for data in list {
        let rdata = match data {
            Data::A(ip) => RData::A(A(*ip)),
            Data::Cname(target) => match fqdn(target) {
                Some(t) => RData::CNAME(CNAME(t)),
                None => continue,
            },
            Data::Srv { port, target } => {
                let Some(t) = fqdn(target) else { continue };
                for ip in zone.addresses(target) {
                    reply.add_additional(Record::from_rdata(t.clone(), TTL, RData::A(A(ip))));
                }
                RData::SRV(SRV::new(0, 100, *port, t))
            }
            Data::Ptr(target) => match fqdn(target) {
                Some(t) => RData::PTR(PTR(t)),
                None => continue,
            },
            Data::Soa => match soa(zone) {
                Some(record) => record.data,
                None => continue,
            },
        };
        reply.add_answer(Record::from_rdata(owner.clone(), TTL, rdata));
    }
}

/// The zone's SOA record, as CoreDNS gives it (`ns.dns.<domain>`,
/// `hostmaster.<domain>`, refresh 7200, retry 1800, expire 86400, minimum
/// the answers' TTL): the answer to SOA at the apex and the authority of
/// negative answers, whose caching it bounds (RFC 2308).
fn soa(zone: &Zone) -> Option<Record> {
    let apex = fqdn(zone.domain())?;
    let mname = fqdn(&format!("ns.dns.{}", zone.domain()))?;
    let rname = fqdn(&format!("hostmaster.{}", zone.domain()))?;
    let data = SOA::new(mname, rname, zone.serial(), 7200, 1800, 86400, TTL);
    Some(Record::from_rdata(apex, TTL, RData::SOA(data)))
}

/// `name` as an absolute DNS name, if it is one.
fn fqdn(name: &str) -> Option<Name> {
    let mut n = Name::from_ascii(name).ok()?;
    n.set_fqdn(true);
    Some(n)
}

fn encode(reply: &Message, counters: &Counters) -> Outcome {
    match reply.to_vec() {
        Ok(bytes) => {
            counters.count_reply(reply);
            Outcome::Reply(bytes)
        }
        Err(_) => {
            bump(&counters.servfail);
            let fail = Message::error_msg(
                reply.metadata.id,
                reply.metadata.op_code,
                ResponseCode::ServFail,
            );
            fail.to_vec().map_or(Outcome::Drop, Outcome::Reply)
        }
    }
}

/// SERVFAIL for `query` (an upstream that did not answer).
fn servfail(query: &[u8], counters: &Counters) -> Option<Vec<u8>> {
    bump(&counters.servfail);
    let mut reply = Message::from_vec(query).ok()?;
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.response_code = ResponseCode::ServFail;
    reply.metadata.recursion_available = true;
    reply.to_vec().ok()
}

/// Sends `query` to `upstream` over UDP and returns its answer, or SERVFAIL.
fn forward(query: &[u8], upstream: SocketAddr, counters: &Counters) -> Option<Vec<u8>> {
    let ask = || -> std::io::Result<Vec<u8>> {
        let any: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().map_err(std::io::Error::other)?
        } else {
            "[::]:0".parse().map_err(std::io::Error::other)?
        };
        let socket = UdpSocket::bind(any)?;
        socket.connect(upstream)?;
        socket.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
        socket.send(query)?;
        let mut buf = vec![0u8; 65535];
        loop {
            let n = socket.recv(&mut buf)?;
            // Only the answer to this query (same id) counts.
            if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    };
    ask().ok().or_else(|| servfail(query, counters))
}

/// Answers one message: from the zone, or upstream.
fn answer(
    zone: &SharedZone,
    bytes: &[u8],
    transport: Transport,
    upstream: Option<SocketAddr>,
    counters: &Counters,
) -> Option<Vec<u8>> {
    let current = zone.current();
    match handle(&current, bytes, transport, upstream.is_some(), counters) {
        Outcome::Reply(bytes) => Some(bytes),
        Outcome::Forward => upstream.and_then(|u| forward(bytes, u, counters)),
        Outcome::Drop => None,
    }
}

/// The running server; stopped (threads joined) on drop.
pub struct DnsServer {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Listens on `addr` (UDP and TCP) and answers `clients` from `zone`;
    /// names outside it go to `upstream` if set.
    pub fn start(
        addr: SocketAddrV4,
        zone: Arc<SharedZone>,
        upstream: Option<SocketAddr>,
        clients: Clients,
    ) -> Result<DnsServer, DnsError> {
        let bind_err = |proto, source| DnsError::Bind {
            proto,
            addr,
            source,
        };
        let udp = UdpSocket::bind(addr).map_err(|e| bind_err("UDP", e))?;
        udp.set_read_timeout(Some(POLL))
            .map_err(|e| bind_err("UDP", e))?;
        let tcp = TcpListener::bind(addr).map_err(|e| bind_err("TCP", e))?;
        tcp.set_nonblocking(true).map_err(|e| bind_err("TCP", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (s, c, z, who) = (
            stop.clone(),
            counters.clone(),
            zone.clone(),
            clients.clone(),
        );
        let udp_thread = std::thread::Builder::new()
            .name("dns-udp".into())
            .spawn(move || serve_udp(&udp, &z, upstream, &who, &c, &s));
        let (s, c) = (stop.clone(), counters.clone());
        let tcp_thread = std::thread::Builder::new()
            .name("dns-tcp".into())
            .spawn(move || serve_tcp(&tcp, &zone, upstream, &clients, &c, &s));
        let threads = [udp_thread, tcp_thread]
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bind_err("threads for", e))?;
        Ok(DnsServer {
            stop,
            counters,
            threads,
        })
    }

    /// The counts so far.
    pub fn stats(&self) -> DnsStats {
        self.counters.stats()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_udp(
    socket: &UdpSocket,
    zone: &SharedZone,
    upstream: Option<SocketAddr>,
    clients: &Clients,
    counters: &Counters,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 65535];
    while !stop.load(Ordering::Acquire) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if !clients.allows(from.ip()) {
            bump(&counters.outside);
            continue;
        }
        let Some(query) = buf.get(..n) else { continue };
        if let Some(reply) = answer(zone, query, Transport::Udp, upstream, counters) {
            // A client that went away is no error of ours.
            let _ = socket.send_to(&reply, from);
        }
    }
}

fn serve_tcp(
    listener: &TcpListener,
    zone: &Arc<SharedZone>,
    upstream: Option<SocketAddr>,
    clients: &Clients,
    counters: &Arc<Counters>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((_, from)) if !clients.allows(from.ip()) => bump(&counters.outside),
            Ok((stream, _)) => {
                let (z, c) = (zone.clone(), counters.clone());
                // A connection thread ends with its client or after
                // TCP_IDLE without a message.
                let _ = std::thread::Builder::new()
                    .name("dns-tcp-conn".into())
                    .spawn(move || serve_connection(stream, &z, upstream, &c));
            }
            Err(_) => std::thread::sleep(POLL / 2),
        }
    }
}

/// Length-prefixed messages (RFC 1035 4.2.2) until the client closes.
fn serve_connection(
    mut stream: TcpStream,
    zone: &SharedZone,
    upstream: Option<SocketAddr>,
    counters: &Counters,
) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(TCP_IDLE)).is_err() {
        return;
    }
    let mut len = [0u8; 2];
    let mut buf = vec![0u8; 65535];
    while stream.read_exact(&mut len).is_ok() {
        let Some(query) = buf.get_mut(..usize::from(u16::from_be_bytes(len))) else {
            return;
        };
        if stream.read_exact(query).is_err() {
            return;
        }
        let Some(reply) = answer(zone, query, Transport::Tcp, upstream, counters) else {
            continue;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&reply);
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
