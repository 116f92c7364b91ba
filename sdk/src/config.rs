//! The plugin's settings, as the user gave them with `--set key=value` or a config file.

use crate::bindings::operator::subject::config as wit;

/// The raw value of `key`, if set.
pub fn get(key: &str) -> Option<String> {
    wit::get(key).filter(|v| !v.trim().is_empty())
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
