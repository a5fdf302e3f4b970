//! Embed the guest component if it has been built (`just guest`), so the
//! binary runs without a separate .wasm file. Without it the host still
//! builds and needs `--guest PATH` at run time.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let guest = manifest.join("../target/wasm32-wasip2/guest/cluster_slurm_guest.wasm");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("guest.wasm");
    println!("cargo:rerun-if-changed={}", guest.display());
    let bytes = std::fs::read(&guest).unwrap_or_default();
    if bytes.is_empty() {
        println!(
            "cargo:warning=no guest component at {}; run `just guest` first to embed it",
            guest.display()
        );
    }
    if std::fs::write(&out, bytes).is_err() {
        println!("cargo:warning=cannot write {}", out.display());
    }
}
