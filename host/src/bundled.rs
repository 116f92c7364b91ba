//! Subject plugins compiled into the binary by build.rs.

/// A bundled subject: its name and its component bytes.
pub struct Bundled {
    pub name: &'static str,
    pub wasm: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

pub fn find(name: &str) -> Option<&'static Bundled> {
    BUNDLED.iter().find(|b| b.name == name)
}

pub fn names() -> Vec<&'static str> {
    BUNDLED.iter().map(|b| b.name).collect()
}
