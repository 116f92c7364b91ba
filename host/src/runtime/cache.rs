//! Compiled plugins kept on disk, so that starting the operator again does not compile the
//! same component again.
//!
//! Compiling a subject takes most of a second of CPU and leaves the compiler's code and
//! heap in the process for the rest of its life; loading the compiled artifact takes a few
//! milliseconds and touches neither. An entry is named by the SHA-256 of the component's
//! bytes and of the engine's compatibility hash (wasmtime's version and every setting that
//! changes the generated code), so a different plugin, host or configuration never reads
//! another's entry.
//!
//! Loading machine code from disk is only as safe as the directory it comes from: the host
//! uses a directory only when it belongs to the current user and nobody else may write to
//! it, creates it that way, and checks a SHA-256 of each entry's contents before handing
//! it to wasmtime, so a truncated or corrupted entry is recompiled, never run. Anything
//! wrong with the cache (unreadable, unwritable, corrupt) costs a compile, never a failure.
//!
//! ```no_run
//! # fn demo(engine: &wasmtime::Engine, wasm: &[u8]) -> wasmtime::Result<()> {
//! use operator::runtime::cache::CompileCache;
//! let cache = CompileCache::at("/home/me/.cache/operator/compiled");
//! let component = match cache.load(engine, wasm) {
//!     Some(c) => c,
//!     None => {
//!         let c = wasmtime::component::Component::new(engine, wasm)?;
//!         cache.store(engine, wasm, &c);
//!         c
//!     }
//! };
//! # Ok(()) }
//! ```

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Names the setting that moves or disables the cache.
pub const ENV: &str = "OPERATOR_CACHE_DIR";
/// What `OPERATOR_CACHE_DIR` says to turn the cache off.
pub const OFF: &str = "off";
/// First bytes of every entry: the format, so that a later one is never misread.
const MAGIC: &[u8; 8] = b"OPCC\x01\n\0\0";

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// Feeds `Hash` output into SHA-256, which (unlike std's hashers) is the same in every
/// process and every Rust release.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only the full digest (taken with `finalize`) is used.
        0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CompileCache {
    /// The user's cache: `OPERATOR_CACHE_DIR` if set (`off` for none), else
    /// `$XDG_CACHE_HOME/operator/compiled`, else `$HOME/.cache/operator/compiled`.
    pub fn from_env() -> Option<CompileCache> {
        let dir = match std::env::var_os(ENV) {
            Some(v) if v == OFF || v.is_empty() => return None,
            Some(v) => PathBuf::from(v),
            None => {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME")
                            .filter(|v| !v.is_empty())
                            .map(|h| PathBuf::from(h).join(".cache"))
                    })?;
                base.join("operator").join("compiled")
            }
        };
        Some(CompileCache::at(dir))
    }

    pub fn at(dir: impl Into<PathBuf>) -> CompileCache {
        CompileCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `wasm` compiled by `engine` lives.
    pub fn entry(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut env = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut env);
        let name = format!(
            "{}-{}.cwasm",
            hex(&Sha256::digest(wasm)[..16]),
            hex(&env.0.finalize()[..8])
        );
        self.dir.join(name)
    }

    /// The compiled component, if a sound entry for these bytes and this engine exists.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Option<Component> {
        let path = self.entry(engine, wasm);
        if !path.exists() {
            return None;
        }
        if let Err(why) = private_to_us(&self.dir).and_then(|()| private_to_us(&path)) {
            tracing::warn!(path = %path.display(), "compiled-plugin cache not used: {why}");
            return None;
        }
        let file = match std::fs::read(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), "reading a compiled plugin: {e}");
                return None;
            }
        };
        let Some(code) = verified(&file) else {
            tracing::warn!(path = %path.display(), "a compiled plugin failed its checksum; compiling again");
            let _ = std::fs::remove_file(&path);
            return None;
        };
        // SAFETY: wasmtime runs these bytes as machine code. They are the output of
        // `Component::serialize` by this host: the entry sits in a directory only this user
        // can write, and its SHA-256 matched, so it is byte for byte what was stored.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "a compiled plugin did not load ({e:#}); compiling again");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keeps `component` for the next start. Failing to is logged, never an error.
    pub fn store(&self, engine: &Engine, wasm: &[u8], component: &Component) {
        if let Err(e) = self.try_store(engine, wasm, component) {
            tracing::debug!(dir = %self.dir.display(), "compiled plugin not cached: {e}");
        }
    }

    fn try_store(&self, engine: &Engine, wasm: &[u8], component: &Component) -> Result<(), String> {
        create_private_dir(&self.dir)?;
        private_to_us(&self.dir)?;
        let code = component.serialize().map_err(|e| format!("{e:#}"))?;
        let path = self.entry(engine, wasm);
        // Written aside and renamed into place: a reader never sees half an entry. The name
        // is this writer's alone (process and call), so concurrent writers never share one.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = private_file(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&Sha256::digest(&code))?;
            f.write_all(&code)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("writing {}: {e}", path.display())
        })
    }
}

/// The payload of an entry whose magic and checksum are right.
fn verified(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(MAGIC)?;
    if rest.len() < 32 {
        return None;
    }
    let (sum, code) = rest.split_at(32);
    (Sha256::digest(code).as_slice() == sum).then_some(code)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Ok when `path` belongs to this user and no one else may write to it.
#[cfg(unix)]
fn private_to_us(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let uid = nix::unistd::Uid::effective().as_raw();
    if meta.uid() != uid {
        return Err(format!(
            "{} belongs to uid {}, not to this user ({uid})",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by others (mode {:o})",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_to_us(_path: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_entry_verifies() {
        let code = b"machine code".to_vec();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&Sha256::digest(&code));
        file.extend_from_slice(&code);
        assert_eq!(verified(&file), Some(&code[..]));
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(verified(&flipped), None);
        assert_eq!(verified(&file[..file.len() - 1]), None);
        assert_eq!(verified(&file[..20]), None);
        assert_eq!(verified(b"OPCC"), None);
    }
}
