//! Builds every guest under tests/guests/ and generates a constant per guest plus a
//! `foreach_guest!` macro, which the tests use to make sure every guest has a test.

use std::fmt::Write;

const GUESTS: &[&str] = &[
    "guest-spin",
    "guest-hog",
    "guest-panic",
    "guest-escape",
    "guest-oldwit",
    "guest-good",
];

fn main() {
    let guests = guest_build::build(GUESTS, &["tests/guests", "sdk", "wit"]);
    let mut src = String::new();
    for g in &guests {
        writeln!(
            src,
            "pub const {}: &str = {:?};",
            g.const_name(),
            g.wasm.display().to_string()
        )
        .unwrap();
    }
    src.push_str("#[macro_export]\nmacro_rules! foreach_guest {\n    ($m:ident) => {\n");
    for g in &guests {
        writeln!(src, "        $m!({});", g.ident()).unwrap();
    }
    src.push_str("    };\n}\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, src).unwrap();
}
