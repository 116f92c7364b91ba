//! Builds every guest under tests/guests/ and generates a constant per guest plus a
//! `foreach_guest!` macro, which the tests use to make sure every guest has a test.
//!
//! The guest list is the folder itself: the root Cargo.toml makes every `tests/guests/*` a
//! workspace member, and this script reads each folder's package name from its manifest, so
//! adding a guest is adding a folder (and, through `foreach_guest!`, its test).

use std::fmt::Write;
use std::path::{Path, PathBuf};

const GUESTS_DIR: &str = "tests/guests";

fn main() {
    let root = guest_build::workspace_root();
    let packages = discover(&root.join(GUESTS_DIR));
    let names: Vec<&str> = packages.iter().map(String::as_str).collect();
    let guests = guest_build::build(&names, &[GUESTS_DIR, "sdk", "wit"]);
    let mut src = String::new();
    for g in &guests {
        // Writing to a String cannot fail.
        let _ = writeln!(
            src,
            "pub const {}: &str = {:?};",
            g.const_name(),
            g.wasm.display().to_string()
        );
    }
    src.push_str("#[macro_export]\nmacro_rules! foreach_guest {\n    ($m:ident) => {\n");
    for g in &guests {
        let _ = writeln!(src, "        $m!({});", g.ident());
    }
    src.push_str("    };\n}\n");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    let out = PathBuf::from(out_dir).join("guests.rs");
    if let Err(e) = std::fs::write(&out, src) {
        panic!("writing {}: {e}", out.display());
    }
}

/// The package names of the guests in `dir`, one per folder, sorted. A folder without a
/// manifest, or a manifest without a package name, fails the build with the path.
fn discover(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing the guests in {}: {e}", dir.display()));
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let manifest = path.join("Cargo.toml");
        names.push(package_name(&manifest));
    }
    names.sort();
    if names.is_empty() {
        panic!("no guest crates found under {}", dir.display());
    }
    names
}

fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap_or_else(|e| {
        panic!(
            "{} is a guest folder without a readable Cargo.toml ({e}); every folder under {GUESTS_DIR} is a workspace member",
            manifest.display()
        )
    });
    let doc: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", manifest.display()));
    doc.get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{} has no [package] name", manifest.display()))
}
