//! The host's own data model for what plugins report. It mirrors the WIT types but is
//! owned by the host, serialisable, and stable across WIT versions, so stored tickets and
//! observations outlive any one plugin ABI.

use serde::{Deserialize, Serialize};
use std::fmt;

mod labels;
mod metrics;
pub use labels::Labels;
pub use metrics::{
    MetricCaps, MetricCuts, Metrics, MetricsBuilder, Packed, Sample, SampleLabels, TableError,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentState {
    Up,
    Degraded,
    Down,
    Unknown,
}

impl ComponentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Up => "up",
            ComponentState::Degraded => "degraded",
            ComponentState::Down => "down",
            ComponentState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub id: String,
    pub kind: String,
    pub address: String,
    pub state: ComponentState,
    pub attributes: Labels,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
    pub timestamp_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub timestamp_ms: u64,
    pub component: String,
    pub severity: Severity,
    pub message: String,
    pub attributes: Labels,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub source: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub timestamp_ms: u64,
    pub components: Vec<Component>,
    pub metrics: Metrics,
    pub events: Vec<Event>,
    pub problems: Vec<Problem>,
}

/// Why a plugin could not observe its subject at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum ObserveError {
    Unreachable(String),
    BadData(String),
    Config(String),
}

impl fmt::Display for ObserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObserveError::Unreachable(m) => write!(f, "subject unreachable: {m}"),
            ObserveError::BadData(m) => write!(f, "subject returned bad data: {m}"),
            ObserveError::Config(m) => write!(f, "plugin configuration: {m}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub invariant: String,
    pub severity: Severity,
    pub component: String,
    pub summary: String,
    /// Kept in the plugin's order: the first items are the most telling.
    pub evidence: Vec<(String, String)>,
    pub dedup_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvariantInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub severity: Severity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamInfo {
    pub name: String,
    pub description: String,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub params: Vec<ParamInfo>,
    pub mutates: bool,
    pub risk: Risk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    Greater,
    Less,
    Equal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "kebab-case")]
pub enum SignalCheck {
    Invariant {
        id: String,
    },
    Evidence {
        key: String,
        value: String,
    },
    ComponentState {
        kind: String,
        state: String,
    },
    Attribute {
        key: String,
        value: String,
    },
    Metric {
        name: String,
        labels: Labels,
        comparison: Comparison,
        threshold: f64,
    },
    Event {
        contains: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub description: String,
    pub check: SignalCheck,
    pub weight: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureMode {
    pub id: String,
    pub name: String,
    pub description: String,
    pub signals_for: Vec<Signal>,
    pub signals_against: Vec<Signal>,
    pub suggested_action: Option<String>,
    pub suggested_params: Vec<(String, String)>,
}

/// How the host treats a plugin setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettingKind {
    /// A URL whose origin the plugin may reach.
    Origin,
    /// Comma-separated URLs, each origin reachable.
    OriginList,
    /// Anything else; never a network grant.
    Value,
}

impl SettingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingKind::Origin => "origin",
            SettingKind::OriginList => "origin-list",
            SettingKind::Value => "value",
        }
    }

    pub fn grants_origins(self) -> bool {
        !matches!(self, SettingKind::Value)
    }
}

/// A setting the plugin declares (contract 0.2 and later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingInfo {
    pub name: String,
    pub description: String,
    pub kind: SettingKind,
    pub required: bool,
    pub default_value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectMetadata {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Declared settings. Empty for plugins built against contract 0.1, which declared none.
    #[serde(default)]
    pub settings: Vec<SettingInfo>,
    pub invariants: Vec<InvariantInfo>,
    pub actions: Vec<ActionInfo>,
    pub failure_modes: Vec<FailureMode>,
}

impl SubjectMetadata {
    /// Metadata with only a name, for host-side placeholders and tests.
    pub fn named(name: &str) -> SubjectMetadata {
        SubjectMetadata {
            name: name.to_string(),
            version: String::new(),
            description: String::new(),
            settings: vec![],
            invariants: vec![],
            actions: vec![],
            failure_modes: vec![],
        }
    }

    pub fn setting(&self, name: &str) -> Option<&SettingInfo> {
        self.settings.iter().find(|s| s.name == name)
    }

    /// Finds an action by id or name.
    pub fn action(&self, id_or_name: &str) -> Option<&ActionInfo> {
        self.actions
            .iter()
            .find(|a| a.id.eq_ignore_ascii_case(id_or_name) || a.name == id_or_name)
    }
}
