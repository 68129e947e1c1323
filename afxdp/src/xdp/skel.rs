//! The skeleton libbpf-cargo generates from `src/bpf/podswitch.bpf.c`
//! (see build.rs). Generated code: the workspace lints are relaxed for it.

#![allow(
    clippy::undocumented_unsafe_blocks,
    clippy::cast_possible_truncation,
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused
)]

include!(concat!(env!("OUT_DIR"), "/podswitch.skel.rs"));
