//! Lays the binary's code out with what a cycle runs packed together (issue 14, resident text).
//!
//! With fat LTO the functions one cycle runs are spread over nearly the whole text, and the kernel
//! maps file pages 64 KiB around each fault, so the daemon kept about 2.8 MB of its 3.4 MB of code
//! resident. packaging/symbol-order.txt lists the functions a steady `--dry-run` daemon cycle runs,
//! then those run only at start or by `--once` (written by packaging/symbol-order.py from callgrind
//! runs, see README "Performance"); the linker places them first, in that order. A name that no
//! longer exists (renamed, inlined, another compiler's hash) is skipped, so a stale list only packs
//! less. Only LLD reads an ordering file: it is passed where rustc links with its LLD by default
//! (x86_64-unknown-linux-gnu, Rust 1.90 and later) and no linker was chosen; setting
//! `LXC_AUTOSCALE_NO_SYMBOL_ORDER` turns it off.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("packaging")
        .join("symbol-order.txt");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=LXC_AUTOSCALE_NO_SYMBOL_ORDER");
    if env::var_os("LXC_AUTOSCALE_NO_SYMBOL_ORDER").is_some() || !order.is_file() || !lld_links() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// True when rustc links with its own LLD: the target and compiler that default to it, with no
/// linker or linker flavour given in the flags or the environment.
fn lld_links() -> bool {
    let target = env::var("TARGET").unwrap_or_default();
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let linker_env = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace('-', "_")
    );
    println!("cargo:rerun-if-env-changed={linker_env}");
    if target != "x86_64-unknown-linux-gnu"
        || flags.contains("link")
        || env::var_os(linker_env).is_some()
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let minor = text
        .lines()
        .find_map(|l| l.strip_prefix("release: 1."))
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
