//! One set of generated bindings per supported contract version, and the dispatch between
//! them.
//!
//! Each `wit/since_vX.Y.Z/` folder gets a module here (`v0_1`, `v0_2`, ...) and `latest`
//! names the newest. The host imports are implemented once, for `latest`'s types; an older
//! version's module forwards its imports to them. A component's version is read from its
//! export name when it is compiled ([`super::version`]), and [`Pre`] / [`Instance`] keep the
//! matching bindings so the rest of the runtime never names a version.

mod convert;
mod forward;
pub mod v0_1;
pub mod v0_2;
pub mod v0_3;
pub mod v0_4;
pub mod v0_5;

pub use v0_5 as latest;

use super::state::HostState;
use crate::model;
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

/// A contract version this host speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractVersion {
    V0_1,
    V0_2,
    V0_3,
    V0_4,
    V0_5,
}

impl ContractVersion {
    /// Every supported version, oldest first.
    pub const ALL: &'static [ContractVersion] = &[
        ContractVersion::V0_1,
        ContractVersion::V0_2,
        ContractVersion::V0_3,
        ContractVersion::V0_4,
        ContractVersion::V0_5,
    ];
    pub const LATEST: ContractVersion = ContractVersion::V0_5;

    /// The full version of the frozen WIT folder.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1 => "0.1.0",
            ContractVersion::V0_2 => "0.2.0",
            ContractVersion::V0_3 => "0.3.0",
            ContractVersion::V0_4 => "0.4.0",
            ContractVersion::V0_5 => "0.5.0",
        }
    }

    /// The version that serves a plugin built against `plugin` (e.g. "0.1.3"): same
    /// major and, for 0.x, same minor, as semver's caret rule says. Patch levels add no API.
    pub fn for_plugin(plugin: &str) -> Option<ContractVersion> {
        let parse = |v: &str| -> Option<(u64, u64)> {
            let mut it = v.split(['.', '-', '+']);
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        };
        let wanted = parse(plugin)?;
        Self::ALL
            .iter()
            .copied()
            .find(|v| parse(v.as_str()) == Some(wanted))
    }

    /// Whether plugins of this version declare their settings (and so their grants).
    pub fn declares_settings(self) -> bool {
        self != ContractVersion::V0_1
    }

    /// Whether plugins of this version can check the observations they hold
    /// (`check-retained`).
    pub fn retains_history(self) -> bool {
        matches!(
            self,
            ContractVersion::V0_3 | ContractVersion::V0_4 | ContractVersion::V0_5
        )
    }
}

/// Adds every supported version's host imports to the linker.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::Subject::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_2::Subject::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_3::Subject::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_4::Subject::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_5::Subject::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// A pre-linked component with the bindings of its version.
pub enum Pre {
    V0_1(v0_1::SubjectPre<HostState>),
    V0_2(v0_2::SubjectPre<HostState>),
    V0_3(v0_3::SubjectPre<HostState>),
    V0_4(v0_4::SubjectPre<HostState>),
    V0_5(v0_5::SubjectPre<HostState>),
}

impl Pre {
    pub fn new(version: ContractVersion, pre: InstancePre<HostState>) -> wasmtime::Result<Pre> {
        Ok(match version {
            ContractVersion::V0_1 => Pre::V0_1(v0_1::SubjectPre::new(pre)?),
            ContractVersion::V0_2 => Pre::V0_2(v0_2::SubjectPre::new(pre)?),
            ContractVersion::V0_3 => Pre::V0_3(v0_3::SubjectPre::new(pre)?),
            ContractVersion::V0_4 => Pre::V0_4(v0_4::SubjectPre::new(pre)?),
            ContractVersion::V0_5 => Pre::V0_5(v0_5::SubjectPre::new(pre)?),
        })
    }

    pub async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::V0_1(p) => Instance::V0_1(p.instantiate_async(store).await?),
            Pre::V0_2(p) => Instance::V0_2(p.instantiate_async(store).await?),
            Pre::V0_3(p) => Instance::V0_3(p.instantiate_async(store).await?),
            Pre::V0_4(p) => Instance::V0_4(p.instantiate_async(store).await?),
            Pre::V0_5(p) => Instance::V0_5(p.instantiate_async(store).await?),
        })
    }
}

/// An instantiated plugin, whatever its version.
pub enum Instance {
    V0_1(v0_1::Subject),
    V0_2(v0_2::Subject),
    V0_3(v0_3::Subject),
    V0_4(v0_4::Subject),
    V0_5(v0_5::Subject),
}

/// Why a plugin's `execute` declined, as the plugin said it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionFailure {
    #[error("unknown action: {0}")]
    UnknownAction(String),
    #[error("bad parameters: {0}")]
    BadParams(String),
    #[error("action failed: {0}")]
    Failed(String),
}

/// Runs `$body` with `$b` bound to the instance's bindings and `$v` to its version module.
macro_rules! each_version {
    ($value:expr, $b:ident, $v:ident => $body:expr) => {
        match $value {
            Instance::V0_1($b) => {
                use v0_1 as $v;
                $body
            }
            Instance::V0_2($b) => {
                use v0_2 as $v;
                $body
            }
            Instance::V0_3($b) => {
                use v0_3 as $v;
                $body
            }
            Instance::V0_4($b) => {
                use v0_4 as $v;
                $body
            }
            Instance::V0_5($b) => {
                use v0_5 as $v;
                $body
            }
        }
    };
}

impl Instance {
    pub fn contract(&self) -> ContractVersion {
        match self {
            Instance::V0_1(_) => ContractVersion::V0_1,
            Instance::V0_2(_) => ContractVersion::V0_2,
            Instance::V0_3(_) => ContractVersion::V0_3,
            Instance::V0_4(_) => ContractVersion::V0_4,
            Instance::V0_5(_) => ContractVersion::V0_5,
        }
    }

    pub async fn metadata(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<model::SubjectMetadata> {
        each_version!(self, b, v => {
            let m: v::wit::SubjectMetadata =
                b.operator_subject_plugin().call_metadata(store).await?;
            Ok(m.into())
        })
    }

    pub async fn observe(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<model::Observation, model::ObserveError>> {
        each_version!(self, b, v => {
            let r: Result<v::wit::Observation, v::wit::ObserveError> =
                b.operator_subject_plugin().call_observe(store).await?;
            match r {
                // A table that points outside itself breaks the contract: the call failed.
                Ok(o) => Ok(Ok(v::observation(o).map_err(wasmtime::Error::new)?)),
                Err(e) => Ok(Err(e.into())),
            }
        })
    }

    pub async fn check_invariants(
        &self,
        store: &mut Store<HostState>,
        history: &[&model::Observation],
    ) -> wasmtime::Result<Vec<model::Violation>> {
        each_version!(self, b, v => {
            let history: Vec<v::wit::Observation> = history.iter().map(|o| (*o).into()).collect();
            let out = b
                .operator_subject_plugin()
                .call_check_invariants(store, &history)
                .await?;
            Ok(out.into_iter().map(Into::into).collect())
        })
    }

    /// `check-retained`, on versions that have it; `None` when the version lacks it or the
    /// instance holds fewer than `count` observations.
    pub async fn check_retained(
        &self,
        store: &mut Store<HostState>,
        count: u32,
    ) -> wasmtime::Result<Option<Vec<model::Violation>>> {
        match self {
            Instance::V0_1(_) | Instance::V0_2(_) => Ok(None),
            Instance::V0_3(b) => {
                let out = b
                    .operator_subject_plugin()
                    .call_check_retained(store, count)
                    .await?;
                Ok(out.map(|v| v.into_iter().map(Into::into).collect()))
            }
            Instance::V0_4(b) => {
                let out = b
                    .operator_subject_plugin()
                    .call_check_retained(store, count)
                    .await?;
                Ok(out.map(|v| v.into_iter().map(Into::into).collect()))
            }
            Instance::V0_5(b) => {
                let out = b
                    .operator_subject_plugin()
                    .call_check_retained(store, count)
                    .await?;
                Ok(out.map(|v| v.into_iter().map(Into::into).collect()))
            }
        }
    }

    pub async fn execute(
        &self,
        store: &mut Store<HostState>,
        action: &str,
        params: &[(String, String)],
    ) -> wasmtime::Result<Result<String, ActionFailure>> {
        each_version!(self, b, v => {
            let params: Vec<v::wit::Kv> = params
                .iter()
                .map(|(k, val)| v::wit::Kv { key: k.clone(), value: val.clone() })
                .collect();
            let r = b
                .operator_subject_plugin()
                .call_execute(store, action, &params)
                .await?;
            Ok(r.map_err(|e| match e {
                v::wit::ActionError::UnknownAction(m) => ActionFailure::UnknownAction(m),
                v::wit::ActionError::BadParams(m) => ActionFailure::BadParams(m),
                v::wit::ActionError::Failed(m) => ActionFailure::Failed(m),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ContractVersion;

    #[test]
    fn caret_rules_pick_the_serving_version() {
        assert_eq!(
            ContractVersion::for_plugin("0.1.0"),
            Some(ContractVersion::V0_1)
        );
        assert_eq!(
            ContractVersion::for_plugin("0.1.7"),
            Some(ContractVersion::V0_1),
            "patch levels add no API"
        );
        assert_eq!(
            ContractVersion::for_plugin("0.2.0"),
            Some(ContractVersion::V0_2)
        );
        assert_eq!(
            ContractVersion::for_plugin("0.3.0"),
            Some(ContractVersion::V0_3)
        );
        assert_eq!(
            ContractVersion::for_plugin("0.4.0"),
            Some(ContractVersion::V0_4)
        );
        assert_eq!(
            ContractVersion::for_plugin("0.5.0"),
            Some(ContractVersion::V0_5)
        );
        assert_eq!(ContractVersion::for_plugin("0.6.0"), None);
        assert_eq!(ContractVersion::for_plugin("0.0.9"), None);
        assert_eq!(ContractVersion::for_plugin("1.0.0"), None);
        assert_eq!(ContractVersion::for_plugin("unversioned"), None);
    }

    /// One source of truth: the newest frozen WIT folder, its `package` line, the host's
    /// latest version and the SDK's WIT_VERSION must all agree.
    #[test]
    fn the_wit_the_host_and_the_sdk_name_the_same_version() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut folders: Vec<String> = std::fs::read_dir(root.join("wit"))
            .unwrap()
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix("since_v")
                    .map(String::from)
            })
            .collect();
        folders.sort_by_key(|v| {
            v.split('.')
                .map(|p| p.parse::<u64>().unwrap_or(0))
                .collect::<Vec<_>>()
        });
        let supported: Vec<&str> = ContractVersion::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(
            folders, supported,
            "every frozen WIT folder has host bindings"
        );
        for v in &supported {
            let wit =
                std::fs::read_to_string(root.join(format!("wit/since_v{v}/subject.wit"))).unwrap();
            assert!(
                wit.contains(&format!("package operator:subject@{v};")),
                "wit/since_v{v} declares another package version"
            );
        }
        let latest = ContractVersion::LATEST.as_str();
        assert_eq!(folders.last().map(String::as_str), Some(latest));
        let sdk = std::fs::read_to_string(root.join("sdk/src/lib.rs")).unwrap();
        assert!(
            sdk.contains(&format!("pub const WIT_VERSION: &str = \"{latest}\";")),
            "sdk/src/lib.rs WIT_VERSION differs from the host's latest {latest}"
        );
        assert!(
            sdk.contains(&format!("\"../wit/since_v{latest}\"")),
            "the SDK builds against another WIT folder than {latest}"
        );
    }
}
