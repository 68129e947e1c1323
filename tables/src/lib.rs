//! The data the podswitch fast path reads, and how control publishes it.
//!
//! Every table here is either part of an immutable [`snapshot`] (built by the
//! control thread, read lock-free by workers, swapped whole) or the one shared
//! mutable tables, [`conntrack`] and [`fragments`].

pub mod affinity;
pub mod conntrack;
pub mod flow;
pub mod fragments;
pub mod lpm;
pub mod maglev;
pub mod model;
pub mod policy;
pub mod route;
pub mod service;
pub mod snapshot;
