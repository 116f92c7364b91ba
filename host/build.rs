//! Builds the bundled subject plugins to wasm32-wasip2 components and embeds them.

use std::fmt::Write;

/// (package, name users type after `--subject`)
const SUBJECTS: &[(&str, &str)] = &[
    ("subject-ratelimiter", "ratelimiter"),
    ("subject-tikv", "tikv"),
];

fn main() {
    let packages: Vec<&str> = SUBJECTS.iter().map(|(p, _)| *p).collect();
    let guests = guest_build::build(&packages, &["wit", "sdk", "subjects"]);
    let mut src = String::from("pub const BUNDLED: &[Bundled] = &[\n");
    for (guest, (_, name)) in guests.iter().zip(SUBJECTS) {
        writeln!(
            src,
            "    Bundled {{ name: {name:?}, wasm: include_bytes!({:?}) }},",
            guest.wasm.display().to_string()
        )
        .unwrap();
    }
    src.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("bundled.rs");
    std::fs::write(out, src).unwrap();
}
