//! Contract version checking at load time. The version is read from the component's own
//! export name (`operator:subject/plugin@X.Y.Z`), so it cannot disagree with what the
//! component implements.

use super::PluginError;
use super::bindings::ContractVersion;
use wasmtime::Engine;
use wasmtime::component::Component;

const EXPORT_PREFIX: &str = "operator:subject/plugin";

/// The newest contract version this host implements.
pub const HOST_WIT_VERSION: &str = "0.5.0";

/// Every version this host loads, for messages.
pub fn supported() -> String {
    ContractVersion::ALL
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plugin's own version string and the host version that serves it, or an error
/// naming both.
pub fn check(
    engine: &Engine,
    component: &Component,
    what: &str,
) -> Result<(String, ContractVersion), PluginError> {
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
    match ContractVersion::for_plugin(&version) {
        Some(serving) => Ok((version, serving)),
        None => Err(PluginError::IncompatibleVersion {
            what: what.to_string(),
            plugin: version,
            host: supported(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_version_is_the_latest_binding() {
        assert_eq!(
            super::HOST_WIT_VERSION,
            super::ContractVersion::LATEST.as_str()
        );
    }
}
