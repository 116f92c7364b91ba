//! The plugin's settings, as the user gave them with `--set key=value` or a config file.

use crate::bindings::operator::subject::config as wit;
use std::cell::OnceCell;

thread_local! {
    /// Every setting, sorted by key, read from the host on first use. The host fixes a
    /// plugin's settings when it builds the plugin, so an instance never sees them change;
    /// reading them once spares each `get` a call into the host (a tick of the rate limiter
    /// made about ten).
    static SETTINGS: OnceCell<Vec<(String, String)>> = const { OnceCell::new() };
}

/// The raw value of `key`, if set.
pub fn get(key: &str) -> Option<String> {
    SETTINGS
        .with(|cell| {
            let settings = cell.get_or_init(|| {
                let mut all = all();
                all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                all
            });
            settings
                .binary_search_by(|(k, _)| k.as_str().cmp(key))
                .ok()
                .map(|i| settings[i].1.clone())
        })
        .filter(|v| !v.trim().is_empty())
}

/// The value of `key`, or an error naming the missing key.
pub fn require(key: &str) -> Result<String, String> {
    get(key).ok_or_else(|| format!("missing setting `{key}` (pass --set {key}=...)"))
}

/// A comma-separated list setting (`nodes=http://a,http://b`), trimmed, empties dropped.
pub fn list(key: &str) -> Vec<String> {
    get(key).map(|v| split_list(&v)).unwrap_or_default()
}

/// Splits a comma-separated setting value.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A parsed setting with a default; a malformed value is an error naming key and value.
pub fn parse_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T, String> {
    match get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("setting `{key}` has a malformed value `{v}`")),
    }
}

/// All settings.
pub fn all() -> Vec<(String, String)> {
    wit::all()
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect()
}
