//! The XDP programs in front of the AF_XDP sockets, and their loader.
//!
//! `src/bpf/podswitch.bpf.c` holds two programs sharing one socket map
//! (`xsks`, keyed by rx queue):
//!
//! - [`XdpKind::Port`] (`xdp_port`, pod veths and the host port): every frame
//!   goes to the socket bound on its queue; with none bound, to the kernel.
//! - [`XdpKind::Uplink`] (`xdp_uplink`, the node's uplink): only what the
//!   switch owns goes to the socket: UDP to port 4789 (VXLAN) or a NodePort,
//!   addressed to a node IP, and any IPv4 packet addressed to a service IP
//!   (LoadBalancer ingress, externalIPs). ARP, ssh, kubelet, the node's own
//!   traffic and anything malformed or VLAN-tagged go to the kernel untouched.
//!
//! [`XdpProgram::attach`] loads a fresh copy of the object (one per
//! interface, so each interface has its own socket map) and attaches the
//! program by BPF link, which picks native (driver) mode on veth. The link
//! lives as long as the [`XdpProgram`]: dropping it, or the process dying,
//! detaches the program.
//!
//! Crash-restart: a link dies with its process, but a program attached the
//! old netlink way (`ip link set dev X xdp ...`) stays. When attaching fails
//! because the interface already has a program (EBUSY/EEXIST), the loader looks
//! at what is attached: if it is one of ours (by name, `xdp_port` or
//! `xdp_uplink`) and attached by netlink, it is detached and the attach
//! retried. Anything else is refused: a program podswitch did not load
//! ([`XdpError::ForeignProgram`]) and one of ours held by a live BPF link,
//! i.e. another running loader or a pinned link ([`XdpError::HeldByLink`]).
//! A second loader on the same interface therefore fails cleanly; it never
//! steals the interface from a running one.

mod skel;
mod stale;

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use libbpf_rs::libbpf_sys;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use thiserror::Error;

use skel::PodswitchSkelBuilder;

/// Rx queues an interface can bind sockets on (`xsks` max_entries).
pub const MAX_QUEUES: u32 = 64;

/// Which program an interface runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpKind {
    /// Pod veths and the host port: everything to the switch.
    Port,
    /// The node's uplink: only what the switch owns to the switch.
    Uplink,
}

impl XdpKind {
    /// The program's name, as the kernel reports it (`bpftool prog`,
    /// `ip link`).
    pub const fn program_name(self) -> &'static str {
        match self {
            XdpKind::Port => "xdp_port",
            XdpKind::Uplink => "xdp_uplink",
        }
    }
}

/// An interface in error messages: its name (resolved in the calling thread's
/// network namespace) and index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The kernel's interface index.
    pub index: u32,
    /// Its name, if it could be resolved when the error happened.
    pub name: Option<String>,
}

impl Interface {
    fn lookup(index: u32) -> Self {
        let mut buf = [0u8; libc::IF_NAMESIZE];
        // SAFETY: `buf` is IF_NAMESIZE bytes, what if_indextoname may write
        // (name and NUL); it does not keep the pointer.
        let ret = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
        let name = if ret.is_null() {
            None
        } else {
            CStr::from_bytes_until_nul(&buf)
                .ok()
                .map(|name| name.to_string_lossy().into_owned())
        };
        Interface { index, name }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} (ifindex {})", self.index),
            None => write!(f, "ifindex {}", self.index),
        }
    }
}

/// What can go wrong loading, attaching or configuring the XDP programs.
#[derive(Debug, Error)]
pub enum XdpError {
    /// The kernel refused the BPF object.
    #[error(
        "could not load podswitch's XDP object into the kernel (needs root or \
         CAP_BPF+CAP_NET_ADMIN, and a kernel with AF_XDP): {0:#}"
    )]
    Load(#[source] libbpf_rs::Error),
    /// The interface index is not one the kernel knows (u32 beyond i32).
    #[error("interface index {0} is out of range")]
    BadIfindex(u32),
    /// Creating the BPF link failed.
    #[error("could not attach {program} to interface {interface}: {errno}")]
    Attach {
        /// The program being attached.
        program: &'static str,
        /// Where.
        interface: Interface,
        /// The kernel's reason.
        errno: io::Error,
    },
    /// The interface runs an XDP program podswitch did not load.
    #[error(
        "interface {interface} already runs XDP program {name:?} (id {id}), which \
         podswitch did not load; remove it (ip link set dev IFACE xdp off) if it \
         is not needed"
    )]
    ForeignProgram {
        /// Where.
        interface: Interface,
        /// The other program's name.
        name: String,
        /// The other program's id (`bpftool prog show id ID`).
        id: u32,
    },
    /// One of our programs is attached by a BPF link some other holder keeps.
    #[error(
        "interface {interface} already runs podswitch's {name} (id {id}) through a \
         BPF link that a running process or a pin holds; stop the other podswitch \
         (or remove the pinned link) first"
    )]
    HeldByLink {
        /// Where.
        interface: Interface,
        /// Our program's name.
        name: String,
        /// Its id.
        id: u32,
    },
    /// Asking the kernel what is attached, or detaching a stale program, failed.
    #[error("could not {what} on interface {interface}: {errno}")]
    Stale {
        /// What was attempted.
        what: &'static str,
        /// Where.
        interface: Interface,
        /// The kernel's reason.
        errno: io::Error,
    },
    /// A queue beyond the socket map.
    #[error("queue {queue} is beyond the {MAX_QUEUES} queues XDP sockets can bind on")]
    QueueOutOfRange {
        /// The queue asked for.
        queue: u32,
    },
    /// An uplink-only operation on a port program.
    #[error("{0} applies to the uplink program only, and this is a port program")]
    NotUplink(&'static str),
    /// A map update, delete or lookup failed.
    #[error("could not {what} in BPF map {map}: {source:#}")]
    Map {
        /// The map.
        map: &'static str,
        /// What was attempted, with the key.
        what: String,
        /// libbpf's error, with errno.
        #[source]
        source: libbpf_rs::Error,
    },
    /// BPF_PROG_TEST_RUN failed.
    #[error("test run of {program} failed: {errno}")]
    TestRun {
        /// The program.
        program: &'static str,
        /// The kernel's reason.
        errno: io::Error,
    },
}

/// The uplink filter's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Frames left to the kernel (not the switch's).
    pub passed: u64,
    /// Frames claimed for the switch (a redirect to the queue's socket was
    /// attempted).
    pub redirected: u64,
    /// Of `redirected`, frames whose queue had no socket bound: the kernel got
    /// them instead.
    pub unbound: u64,
}

/// Indices of `uplink_stats` in podswitch.bpf.c.
const STAT_PASSED: u32 = 0;
const STAT_REDIRECTED: u32 = 1;
const STAT_UNBOUND: u32 = 2;

/// The maps only the uplink program has.
#[derive(Debug)]
struct UplinkMaps {
    node_ips: MapHandle,
    node_ports: MapHandle,
    service_ips: MapHandle,
    stats: MapHandle,
}

/// A loaded XDP program, attached to one interface until dropped.
///
/// Holds its own file descriptors (program, maps, link), so it is `Send` and
/// owes nothing to the libbpf object it was loaded from.
#[derive(Debug)]
pub struct XdpProgram {
    kind: XdpKind,
    /// The BPF link (None when only loaded); closing it detaches. Declared
    /// before the program and maps, so it is dropped before them.
    link: Option<OwnedFd>,
    interface: Option<Interface>,
    prog: OwnedFd,
    xsks: MapHandle,
    uplink: Option<UplinkMaps>,
}

impl XdpProgram {
    /// Loads the `kind` program and attaches it to interface `ifindex` (in the
    /// calling thread's network namespace) by BPF link, replacing a stale
    /// podswitch program left there by netlink (see the module doc).
    pub fn attach(ifindex: u32, kind: XdpKind) -> Result<XdpProgram, XdpError> {
        XdpProgram::load(kind)?.attach_loaded(ifindex)
    }

    /// Attaches a program from [`XdpProgram::load`] to interface `ifindex`
    /// as [`XdpProgram::attach`] does. Loading (libbpf and the verifier)
    /// is most of the cost of an attach: the agent loads ahead of time and
    /// only links when a pod arrives.
    pub fn attach_loaded(self, ifindex: u32) -> Result<XdpProgram, XdpError> {
        let mut program = self;
        let ifindex_i32 = i32::try_from(ifindex).map_err(|_| XdpError::BadIfindex(ifindex))?;
        let link = match link_create(program.prog.as_fd(), ifindex_i32) {
            Ok(link) => link,
            Err(libc::EBUSY | libc::EEXIST) => {
                stale::remove_ours(ifindex_i32, &Interface::lookup(ifindex))?;
                link_create(program.prog.as_fd(), ifindex_i32)
                    .map_err(|errno| program.attach_error(ifindex, errno))?
            }
            Err(errno) => return Err(program.attach_error(ifindex, errno)),
        };
        program.link = Some(link);
        program.interface = Some(Interface::lookup(ifindex));
        Ok(program)
    }

    /// Loads the `kind` program without attaching it anywhere: for
    /// [`XdpProgram::test_run`], for checking that the kernel accepts it,
    /// and to attach later ([`XdpProgram::attach_loaded`]).
    pub fn load(kind: XdpKind) -> Result<XdpProgram, XdpError> {
        let mut storage = MaybeUninit::uninit();
        let mut open = PodswitchSkelBuilder::default()
            .open(&mut storage)
            .map_err(XdpError::Load)?;
        // Load only the program asked for, and only the maps it uses.
        let uplink = kind == XdpKind::Uplink;
        open.progs.xdp_port.set_autoload(!uplink);
        open.progs.xdp_uplink.set_autoload(uplink);
        for map in [
            &mut open.maps.node_ips,
            &mut open.maps.node_ports,
            &mut open.maps.service_ips,
            &mut open.maps.uplink_stats,
        ] {
            map.set_autocreate(uplink).map_err(XdpError::Load)?;
        }
        let skel = open.load().map_err(XdpError::Load)?;

        let prog = match kind {
            XdpKind::Port => &skel.progs.xdp_port,
            XdpKind::Uplink => &skel.progs.xdp_uplink,
        };
        let prog = prog
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| XdpError::Load(e.into()))?;
        let handle = |map: &libbpf_rs::MapMut<'_>| MapHandle::try_from(map).map_err(XdpError::Load);
        let uplink = if uplink {
            Some(UplinkMaps {
                node_ips: handle(&skel.maps.node_ips)?,
                node_ports: handle(&skel.maps.node_ports)?,
                service_ips: handle(&skel.maps.service_ips)?,
                stats: handle(&skel.maps.uplink_stats)?,
            })
        } else {
            None
        };
        Ok(XdpProgram {
            kind,
            link: None,
            interface: None,
            prog,
            xsks: handle(&skel.maps.xsks)?,
            uplink,
        })
    }

    /// Which program this is.
    pub fn kind(&self) -> XdpKind {
        self.kind
    }

    /// The interface it is attached to, if any.
    pub fn interface(&self) -> Option<&Interface> {
        self.interface.as_ref()
    }

    /// Sends frames arriving on rx `queue` to AF_XDP socket `xsk_fd`, which
    /// must be bound to this interface and queue. The map holds its own
    /// reference: closing the socket removes it from the map.
    pub fn set_socket(&mut self, queue: u32, xsk_fd: RawFd) -> Result<(), XdpError> {
        check_queue(queue)?;
        self.xsks
            .update(&queue.to_ne_bytes(), &xsk_fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| XdpError::Map {
                map: "xsks",
                what: format!(
                    "bind socket fd {xsk_fd} on queue {queue} (is it an AF_XDP socket bound to \
                     this interface and queue?)"
                ),
                source,
            })
    }

    /// Stops sending queue `queue`'s frames to a socket: they go to the
    /// kernel. Clearing an empty queue is not an error.
    pub fn clear_socket(&mut self, queue: u32) -> Result<(), XdpError> {
        check_queue(queue)?;
        delete_present(&self.xsks, "xsks", &queue.to_ne_bytes(), || {
            format!("unbind queue {queue}")
        })
    }

    /// Claims UDP 4789 and NodePorts addressed to `ip` (uplink only).
    pub fn add_node_ip(&mut self, ip: Ipv4Addr) -> Result<(), XdpError> {
        let maps = self.uplink("add_node_ip")?;
        insert(&maps.node_ips, "node_ips", &ip.octets(), || {
            format!("add node IP {ip}")
        })
    }

    /// Stops claiming traffic to node IP `ip` (uplink only).
    pub fn remove_node_ip(&mut self, ip: Ipv4Addr) -> Result<(), XdpError> {
        let maps = self.uplink("remove_node_ip")?;
        delete_present(&maps.node_ips, "node_ips", &ip.octets(), || {
            format!("remove node IP {ip}")
        })
    }

    /// Claims `proto` (6 TCP, 17 UDP) to `port` on the node IPs (uplink only).
    pub fn add_node_port(&mut self, proto: u8, port: u16) -> Result<(), XdpError> {
        let maps = self.uplink("add_node_port")?;
        insert(
            &maps.node_ports,
            "node_ports",
            &node_port_key(proto, port),
            || format!("add NodePort {port}/{}", proto_name(proto)),
        )
    }

    /// Stops claiming `proto` to `port` (uplink only).
    pub fn remove_node_port(&mut self, proto: u8, port: u16) -> Result<(), XdpError> {
        let maps = self.uplink("remove_node_port")?;
        delete_present(
            &maps.node_ports,
            "node_ports",
            &node_port_key(proto, port),
            || format!("remove NodePort {port}/{}", proto_name(proto)),
        )
    }

    /// Claims every IPv4 packet addressed to `ip` (LoadBalancer ingress,
    /// externalIPs; uplink only).
    pub fn add_service_ip(&mut self, ip: Ipv4Addr) -> Result<(), XdpError> {
        let maps = self.uplink("add_service_ip")?;
        insert(&maps.service_ips, "service_ips", &ip.octets(), || {
            format!("add service IP {ip}")
        })
    }

    /// Stops claiming traffic to service IP `ip` (uplink only).
    pub fn remove_service_ip(&mut self, ip: Ipv4Addr) -> Result<(), XdpError> {
        let maps = self.uplink("remove_service_ip")?;
        delete_present(&maps.service_ips, "service_ips", &ip.octets(), || {
            format!("remove service IP {ip}")
        })
    }

    /// The uplink filter's counters, summed over CPUs (uplink only).
    pub fn stats(&self) -> Result<UplinkStats, XdpError> {
        let maps = self.uplink("stats")?;
        let read = |index: u32| -> Result<u64, XdpError> {
            let per_cpu = maps
                .stats
                .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
                .map_err(|source| XdpError::Map {
                    map: "uplink_stats",
                    what: format!("read counter {index}"),
                    source,
                })?
                .unwrap_or_default();
            Ok(per_cpu
                .iter()
                .filter_map(|value| value.get(..8)?.try_into().ok())
                .map(u64::from_ne_bytes)
                .sum())
        };
        Ok(UplinkStats {
            passed: read(STAT_PASSED)?,
            redirected: read(STAT_REDIRECTED)?,
            unbound: read(STAT_UNBOUND)?,
        })
    }

    /// Runs the program once on `frame` with BPF_PROG_TEST_RUN (no interface
    /// involved, maps and counters are the real ones) and returns its XDP
    /// action (`XDP_PASS` = 2, `XDP_REDIRECT` = 4). The frame must be at least
    /// an Ethernet header long (the kernel refuses shorter ones with EINVAL).
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, XdpError> {
        let program = self.kind.program_name();
        let size = u32::try_from(frame.len()).map_err(|_| XdpError::TestRun {
            program,
            errno: io::Error::from_raw_os_error(libc::E2BIG),
        })?;
        let mut opts = libbpf_sys::bpf_test_run_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as libbpf_sys::size_t,
            data_in: frame.as_ptr().cast(),
            data_size_in: size,
            repeat: 1,
            ..Default::default()
        };
        // SAFETY: `opts` is a valid, sized bpf_test_run_opts whose data_in
        // points to `size` readable bytes that outlive the call; no output
        // buffers are given, so the kernel writes only into `opts`.
        let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(self.prog.as_raw_fd(), &mut opts) };
        if ret < 0 {
            return Err(XdpError::TestRun {
                program,
                errno: io::Error::from_raw_os_error(-ret),
            });
        }
        Ok(opts.retval)
    }

    fn uplink(&self, op: &'static str) -> Result<&UplinkMaps, XdpError> {
        self.uplink.as_ref().ok_or(XdpError::NotUplink(op))
    }

    fn attach_error(&self, ifindex: u32, errno: i32) -> XdpError {
        XdpError::Attach {
            program: self.kind.program_name(),
            interface: Interface::lookup(ifindex),
            errno: io::Error::from_raw_os_error(errno),
        }
    }
}

impl AsFd for XdpProgram {
    /// The program's file descriptor (BPF_PROG_TEST_RUN, introspection).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }
}

/// Creates an XDP BPF link for `prog` on `ifindex`; the errno on failure.
fn link_create(prog: BorrowedFd<'_>, ifindex: i32) -> Result<OwnedFd, i32> {
    // SAFETY: plain syscall wrapper; NULL opts is allowed and means defaults
    // (flags 0: the kernel picks driver mode where the device has it).
    let fd = unsafe {
        libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            ifindex,
            libbpf_sys::BPF_XDP,
            std::ptr::null(),
        )
    };
    if fd < 0 {
        return Err(-fd);
    }
    // SAFETY: `fd` is a new link descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check_queue(queue: u32) -> Result<(), XdpError> {
    if queue < MAX_QUEUES {
        Ok(())
    } else {
        Err(XdpError::QueueOutOfRange { queue })
    }
}

/// The `struct node_port_key` of podswitch.bpf.c: proto, pad, port in network
/// order.
fn node_port_key(proto: u8, port: u16) -> [u8; 4] {
    let [hi, lo] = port.to_be_bytes();
    [proto, 0, hi, lo]
}

fn proto_name(proto: u8) -> String {
    match proto {
        tables::proto::TCP => "tcp".into(),
        tables::proto::UDP => "udp".into(),
        other => format!("proto{other}"),
    }
}

fn insert(
    map: &MapHandle,
    name: &'static str,
    key: &[u8],
    what: impl FnOnce() -> String,
) -> Result<(), XdpError> {
    map.update(key, &[1], MapFlags::ANY)
        .map_err(|source| XdpError::Map {
            map: name,
            what: what(),
            source,
        })
}

/// Deletes `key`; a key that is not there is not an error.
fn delete_present(
    map: &MapHandle,
    name: &'static str,
    key: &[u8],
    what: impl FnOnce() -> String,
) -> Result<(), XdpError> {
    match map.delete(key) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(XdpError::Map {
            map: name,
            what: what(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_port_key_matches_the_c_struct() {
        // struct node_port_key { u8 proto; u8 pad; u16 port (network order) }
        assert_eq!(node_port_key(6, 30080), [6, 0, 0x75, 0x80]);
        assert_eq!(node_port_key(17, 53), [17, 0, 0, 53]);
    }

    #[test]
    fn errors_name_the_interface_and_errno() {
        let err = XdpError::Attach {
            program: "xdp_port",
            interface: Interface {
                index: 7,
                name: Some("veth0".into()),
            },
            errno: io::Error::from_raw_os_error(libc::EBUSY),
        };
        let text = err.to_string();
        assert!(text.contains("xdp_port"), "{text}");
        assert!(text.contains("veth0 (ifindex 7)"), "{text}");
        assert!(text.contains("os error 16"), "{text}");
        let unnamed = Interface {
            index: 9,
            name: None,
        };
        assert_eq!(unnamed.to_string(), "ifindex 9");
    }

    #[test]
    fn queues_beyond_the_socket_map_are_refused() {
        assert!(check_queue(MAX_QUEUES - 1).is_ok());
        assert!(matches!(
            check_queue(MAX_QUEUES),
            Err(XdpError::QueueOutOfRange { queue: 64 })
        ));
    }
}
