//! Packet views, pipeline stages, ports and workers of the podswitch fast path.

pub mod wire;
