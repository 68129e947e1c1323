//! The podswitch fast path without its I/O: packet views ([`wire`]), the
//! batch pipeline and its stages ([`pipeline`]), the frame pool ([`frame`],
//! with large chunks for super-packets), counters, software segmentation
//! ([`gso`]) and coalescing ([`gro`]), the [`worker`] that moves frames between ports and the
//! pipeline, and the in-memory and pcap [`port`]s. It builds and tests
//! anywhere, without clang or root; the AF_XDP ports, the XDP programs and
//! the threads that poll them are the `afxdp` crate's.
//!
//! It depends on `tables` (which it reads, lock-free) and must never depend
//! on I/O crates (libbpf), the agent, the local API or any control-plane
//! crate (kube, tokio): nothing above the tables reaches into a worker.

pub mod counters;
pub mod frame;
pub mod gro;
pub mod gso;
pub mod pipeline;
pub mod port;
pub mod wire;
pub mod worker;
