//! Finding and removing a stale podswitch XDP program on an interface (see
//! the crash-restart paragraph of the module doc).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use libbpf_rs::libbpf_sys;

use super::{Interface, XdpError, XdpKind};

/// Detaches whatever netlink-attached podswitch program runs on `ifindex`, in
/// any mode. Fails, detaching nothing, if a program there is not ours; fails
/// if one of ours is held by a BPF link (the kernel refuses to detach it).
pub(super) fn remove_ours(ifindex: i32, interface: &Interface) -> Result<(), XdpError> {
    let attached = query(ifindex, interface)?;
    let modes = [
        (attached.drv_prog_id, libbpf_sys::XDP_FLAGS_DRV_MODE),
        (attached.skb_prog_id, libbpf_sys::XDP_FLAGS_SKB_MODE),
        (attached.hw_prog_id, libbpf_sys::XDP_FLAGS_HW_MODE),
    ];
    // Check everything before detaching anything.
    let mut ours = Vec::new();
    for (id, mode) in modes {
        if id == 0 {
            continue;
        }
        let name = program_name(id, interface)?;
        if ![XdpKind::Port, XdpKind::Uplink]
            .iter()
            .any(|kind| kind.program_name() == name)
        {
            return Err(XdpError::ForeignProgram {
                interface: interface.clone(),
                name,
                id,
            });
        }
        ours.push((id, mode, name));
    }
    for (id, mode, name) in ours {
        // SAFETY: plain syscall wrapper; NULL opts is allowed.
        let ret = unsafe { libbpf_sys::bpf_xdp_detach(ifindex, mode, std::ptr::null()) };
        match -ret {
            0 => {}
            libc::EBUSY => {
                return Err(XdpError::HeldByLink {
                    interface: interface.clone(),
                    name,
                    id,
                })
            }
            errno => {
                return Err(XdpError::Stale {
                    what: "detach a stale podswitch XDP program",
                    interface: interface.clone(),
                    errno: io::Error::from_raw_os_error(errno),
                })
            }
        }
    }
    Ok(())
}

fn query(ifindex: i32, interface: &Interface) -> Result<libbpf_sys::bpf_xdp_query_opts, XdpError> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: `opts` is a valid, sized bpf_xdp_query_opts the call fills in.
    let ret = unsafe { libbpf_sys::bpf_xdp_query(ifindex, 0, &mut opts) };
    if ret < 0 {
        return Err(XdpError::Stale {
            what: "query the attached XDP program",
            interface: interface.clone(),
            errno: io::Error::from_raw_os_error(-ret),
        });
    }
    Ok(opts)
}

/// The name of loaded program `id` (at most 15 bytes, as the kernel keeps it).
fn program_name(id: u32, interface: &Interface) -> Result<String, XdpError> {
    let stale = |what, errno: i32| XdpError::Stale {
        what,
        interface: interface.clone(),
        errno: io::Error::from_raw_os_error(errno),
    };
    // SAFETY: plain syscall wrapper.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return Err(stale("open the attached XDP program by id", -fd));
    }
    // SAFETY: `fd` is a new program descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = libbpf_sys::bpf_prog_info::default();
    // bpf_prog_info is a few hundred bytes: the size fits u32.
    #[allow(clippy::cast_possible_truncation)]
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is a zeroed bpf_prog_info of `len` bytes (no output
    // arrays requested, all their pointers are 0); the call writes at most
    // `len` bytes into it.
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if ret < 0 {
        return Err(stale("read the attached XDP program's name", -ret));
    }
    let bytes: Vec<u8> = info.name.iter().map(|&c| c as u8).collect();
    Ok(CStr::from_bytes_until_nul(&bytes)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned()))
}
