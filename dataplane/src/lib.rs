//! Packet views, pipeline stages, ports and workers of the podswitch fast path.

pub mod counters;
pub mod frame;
pub mod pipeline;
pub mod port;
pub mod runner;
pub mod wire;
pub mod worker;
pub mod xdp;
