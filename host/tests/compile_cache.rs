//! The compiled-plugin cache with real components: a second start loads what the first
//! compiled and runs it; a corrupted entry, or a directory others may write to, costs a
//! compile and never runs what is in it.

use operator::runtime::cache::CompileCache;
use operator::runtime::{PluginBuilder, PluginSource, Runtime};
use operator_tests::guests;
use std::os::unix::fs::PermissionsExt;

fn wasm() -> Vec<u8> {
    std::fs::read(guests::GUEST_GOOD).unwrap()
}

/// Whether compiling `wasm` with `cache` loaded it from there instead of compiling.
fn from_cache(runtime: &Runtime, cache: &CompileCache, wasm: &[u8]) -> bool {
    runtime
        .compile_with(Some(cache), "guest", wasm)
        .unwrap()
        .from_cache
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The plugin's metadata, asked of an instance of `compiled`: the code really runs.
async fn runs(runtime: &std::sync::Arc<Runtime>, compiled: operator::runtime::CompiledPlugin) {
    let plugin = PluginBuilder::new(PluginSource::file(guests::GUEST_GOOD))
        .build_compiled(runtime.clone(), compiled)
        .await
        .expect("the cached component instantiates and answers");
    assert!(!plugin.metadata().invariants.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_start_loads_what_the_first_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::at(dir.path().join("compiled"));
    let runtime = Runtime::shared().unwrap();
    let wasm = wasm();
    let first = runtime.compile_with(Some(&cache), "good", &wasm).unwrap();
    assert!(!first.from_cache);
    let entries: Vec<_> = std::fs::read_dir(cache.dir()).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1, "one entry, no leftover temporary file");
    assert_eq!(mode(cache.dir()), 0o700);
    assert_eq!(mode(&entries[0].path()), 0o600);
    let second = runtime.compile_with(Some(&cache), "good", &wasm).unwrap();
    assert!(second.from_cache);
    assert_eq!(second.wit_version, first.wit_version);
    runs(&runtime, second).await;
    // Other bytes are another entry.
    let other = std::fs::read(guests::GUEST_PROBE).unwrap();
    assert!(!from_cache(&runtime, &cache, &other));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_entry_is_compiled_again_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::at(dir.path());
    let runtime = Runtime::shared().unwrap();
    let wasm = wasm();
    runtime.compile_with(Some(&cache), "good", &wasm).unwrap();
    let entry = cache.entry(runtime_engine(&runtime), &wasm);
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&entry, &bytes).unwrap();
    let again = runtime.compile_with(Some(&cache), "good", &wasm).unwrap();
    assert!(
        !again.from_cache,
        "a flipped byte is caught before wasmtime sees it"
    );
    runs(&runtime, again).await;
    // The bad entry was replaced by a good one.
    assert!(from_cache(&runtime, &cache, &wasm));
    // Truncated: the same.
    let whole = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, &whole[..whole.len() / 3]).unwrap();
    assert!(!from_cache(&runtime, &cache, &wasm));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_others_may_write_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::at(dir.path());
    let runtime = Runtime::shared().unwrap();
    let wasm = wasm();
    runtime.compile_with(Some(&cache), "good", &wasm).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(
        !from_cache(&runtime, &cache, &wasm),
        "someone else could have put code there"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let entry = cache.entry(runtime_engine(&runtime), &wasm);
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(!from_cache(&runtime, &cache, &wasm));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_that_cannot_be_written_costs_only_the_compile() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let cache = CompileCache::at(file.join("compiled"));
    let runtime = Runtime::shared().unwrap();
    let compiled = runtime.compile_with(Some(&cache), "good", &wasm()).unwrap();
    assert!(!compiled.from_cache);
    runs(&runtime, compiled).await;
}

fn runtime_engine(runtime: &Runtime) -> &wasmtime::Engine {
    runtime.engine()
}
