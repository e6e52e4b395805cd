//! Puts `memory.x` where cortex-m-rt's `link.x` finds it, and adds defmt's
//! linker script when the `defmt` feature is on (its log strings live in a
//! non-allocated section that `defmt.x` lays out).

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x into OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_PORTABLE_GEMM").is_some() {
        // The portable gemm packs B into an 8 KiB stack buffer.
        println!("cargo:rustc-link-arg=--defsym=_stack_reserve=16384");
    }
    if env::var_os("CARGO_FEATURE_DEFMT").is_some() {
        println!("cargo:rustc-link-arg=-Tdefmt.x");
    }
}
