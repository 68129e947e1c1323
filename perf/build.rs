//! Compiles the benchmark's traffic generator and sink (src/bpf/gen.bpf.c)
//! and generates their skeleton into OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SOURCE: &str = "src/bpf/gen.bpf.c";

fn main() {
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("gen.skel.rs");
    SkeletonBuilder::new()
        .source(SOURCE)
        .clang_args(["-I/usr/include/x86_64-linux-gnu", "-Wall", "-Werror"])
        .build_and_generate(&out)
        .unwrap_or_else(|e| {
            panic!("building {SOURCE} (needs clang and libbpf-dev, see deploy/setup.sh): {e:#}")
        });
    println!("cargo:rerun-if-changed={SOURCE}");
}
