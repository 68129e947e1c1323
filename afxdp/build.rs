//! Compiles the XDP programs (src/bpf/podswitch.bpf.c) with clang and
//! generates their Rust skeleton into OUT_DIR, where src/xdp/skel.rs
//! includes it.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SOURCE: &str = "src/bpf/podswitch.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("podswitch.skel.rs");
    SkeletonBuilder::new()
        .source(SOURCE)
        // Debian keeps asm/ headers (pulled in by linux/bpf.h) under the
        // multiarch directory, which clang -target bpf does not search.
        .clang_args(["-I/usr/include/x86_64-linux-gnu", "-Wall", "-Werror"])
        .build_and_generate(&out)
        .unwrap_or_else(|e| {
            panic!("building {SOURCE} (needs clang and libbpf-dev, see deploy/setup.sh): {e:#}")
        });
    println!("cargo:rerun-if-changed={SOURCE}");
}
