//! Compiles guest crates of this workspace to wasm32-wasip2 components from a build script,
//! the way wasmtime's test-programs do: a nested `cargo build` into a target directory of
//! its own (the outer build holds the lock on the usual one), with the outer build's
//! compiler flags stripped so they cannot leak into the wasm build.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "wasm32-wasip2";

/// One built guest: its package name and the component file.
#[derive(Debug, Clone)]
pub struct Guest {
    pub package: String,
    pub wasm: PathBuf,
}

impl Guest {
    /// The package name as a Rust identifier in SCREAMING_SNAKE_CASE.
    pub fn const_name(&self) -> String {
        self.package.replace('-', "_").to_uppercase()
    }

    /// The package name as a snake_case identifier.
    pub fn ident(&self) -> String {
        self.package.replace('-', "_")
    }
}

/// The workspace root, found from the calling build script's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|p| {
            std::fs::read_to_string(p.join("Cargo.toml"))
                .map(|s| s.contains("[workspace]"))
                .unwrap_or(false)
        })
        .expect("no workspace root above the build script")
        .to_path_buf()
}

/// Builds `packages` in release mode for wasm32-wasip2 and returns their component paths.
/// `watch` are paths (relative to the workspace root) whose changes must rebuild them.
/// Panics with a message naming the fix, which is how a build script reports failure.
pub fn build(packages: &[&str], watch: &[&str]) -> Vec<Guest> {
    let root = workspace_root();
    for w in watch {
        println!("cargo:rerun-if-changed={}", root.join(w).display());
    }
    println!("cargo:rerun-if-env-changed=OPERATOR_GUEST_PROFILE");
    check_target_installed();

    let outer_target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target_dir = outer_target.join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for p in packages {
        // `cargo rustc --crate-type cdylib` makes the component only for wasm: the same
        // crates stay plain rlibs for host-side builds (clippy, tests), where a cdylib
        // could not link the `ns:pkg/iface@ver#func` export names.
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .args([
                "rustc",
                "--release",
                "--target",
                TARGET,
                "--crate-type",
                "cdylib",
                "-p",
                p,
            ])
            .arg("--target-dir")
            .arg(&target_dir);
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
        ] {
            cmd.env_remove(var);
        }
        // Plugins ship inside the host binary and get parsed on every load: no debug info.
        // One codegen unit and fat LTO let the guest's calls into the SDK, serde and std
        // inline: a paired A/B of the rate limiter's kept tick (60 rounds, twice) measured
        // observe 10% and the whole tick 8% less CPU. It costs build time (the rate
        // limiter's guest from clean: about 25 s before, 55 s after), so only guests get it;
        // the host keeps the default profile.
        cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "true")
            .env("CARGO_PROFILE_RELEASE_LTO", "fat")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("could not run cargo to build the wasm guest {p}: {e}"));
        if !status.success() {
            panic!("building wasm guest {p} for {TARGET} failed (see the cargo output above)");
        }
    }
    packages
        .iter()
        .map(|p| {
            let wasm = target_dir
                .join(TARGET)
                .join("release")
                .join(format!("{}.wasm", p.replace('-', "_")));
            assert!(
                wasm.exists(),
                "guest {p} built but {} is missing",
                wasm.display()
            );
            Guest {
                package: p.to_string(),
                wasm,
            }
        })
        .collect()
}

fn check_target_installed() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(sysroot) = sysroot {
        let lib = Path::new(&sysroot)
            .join("lib/rustlib")
            .join(TARGET)
            .join("lib");
        if !lib.exists() {
            panic!(
                "the Rust target {TARGET} is not installed; run ../shared/toolchain/install-wasm-target \
                 (or `rustup target add {TARGET}`)"
            );
        }
    }
}
