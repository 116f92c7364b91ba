//! WIT version checking at load time. The version is read from the component's own export
//! name (`operator:subject/plugin@X.Y.Z`), so it cannot disagree with what it implements.

use super::PluginError;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The WIT package version this host implements.
pub const HOST_WIT_VERSION: &str = "0.1.0";
const EXPORT_PREFIX: &str = "operator:subject/plugin";

/// Whether a plugin built against `plugin` can run on a host speaking `host`: same major,
/// and for 0.x the same minor, as semver's caret rule says.
pub fn compatible(plugin: &str, host: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split(['.', '-', '+']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(plugin), parse(host)) {
        (Some((pmaj, pmin)), Some((hmaj, hmin))) => {
            pmaj == hmaj && (pmaj > 0 || pmin == hmin) && pmin <= hmin
        }
        _ => false,
    }
}

/// Returns the plugin's WIT version, or an error naming both versions.
pub fn check(engine: &Engine, component: &Component, what: &str) -> Result<String, PluginError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let Some(name) = exports.iter().find(|n| n.starts_with(EXPORT_PREFIX)) else {
        return Err(PluginError::NotASubject {
            what: what.to_string(),
            reason: format!("it exports {exports:?}, not {EXPORT_PREFIX}@{HOST_WIT_VERSION}"),
        });
    };
    let version = name
        .split_once('@')
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| "unversioned".to_string());
    if !compatible(&version, HOST_WIT_VERSION) {
        return Err(PluginError::IncompatibleVersion {
            what: what.to_string(),
            plugin: version,
            host: HOST_WIT_VERSION.to_string(),
        });
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn caret_rules() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.0", "0.1.4"));
        assert!(compatible("0.1.5", "0.1.4"), "patch levels add no API");
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(!compatible("0.0.9", "0.1.0"));
        assert!(!compatible("1.0.0", "0.1.0"));
        assert!(compatible("1.2.0", "1.3.0"));
        assert!(
            !compatible("1.4.0", "1.3.0"),
            "newer minor needs imports we lack"
        );
        assert!(!compatible("unversioned", "0.1.0"));
    }
}
