//! podswitch's I/O: the AF_XDP socket port ([`xsk`]), the TAP pod port
//! with virtio-net offloads ([`tap`]), the XDP programs in
//! front of the sockets and their loader ([`xdp`], compiled from
//! `src/bpf/podswitch.bpf.c` by `build.rs` with clang), and the pinned
//! worker threads that poll the ports ([`runner`]).
//!
//! It is the only crate that needs clang, libbpf and root; the pipeline it
//! drives (the `dataplane` crate) builds and tests without them. It depends
//! on `dataplane` and `tables` and must never depend on the agent or any
//! control-plane crate.

pub mod runner;
pub mod tap;
pub mod xdp;
pub mod xsk;

pub use xsk::{Umem, XskConfig, XskError, XskPort};
