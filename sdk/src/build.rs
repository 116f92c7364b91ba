//! Builders for the records plugin authors write most: metadata, settings, invariants,
//! actions, failure modes, signals and violations.
//!
//! They exist so that a plugin does not spell out every field of a WIT record: when a later
//! contract version adds a field, the builder fills it with a default and the plugin keeps
//! compiling. Each builder is an inherent method on the record itself, so the value you
//! build is the value you return.
//!
//! ```ignore
//! use operator_sdk::prelude::*;
//!
//! let meta = Metadata::new("web", "1.0.0")
//!     .describe("a web service")
//!     .setting(Setting::origin("url", "base URL").required())
//!     .setting(Setting::value("latency_ms", "p99 limit").default_value("100"))
//!     .invariant(Invariant::new("WEB-01", "healthy", Severity::Critical).describe("answers /health"))
//!     .action(Action::new("WEB-A1", "restart").describe("restart it").param("node", "which").mutating(Risk::Medium))
//!     .failure_mode(
//!         FailureMode::new("WEB-F1", "crashed")
//!             .describe("the process is gone")
//!             .signal_for("WEB-01 fires", Check::invariant("WEB-01"), 0.6)
//!             .signal_against("it answers", Check::evidence("reachable", "true"), 0.8)
//!             .suggests("WEB-A1", &[("node", "{node}")]),
//!     );
//! let v = Violation::new("WEB-01", Severity::Critical, "web")
//!     .component("web")
//!     .summary("web does not answer")
//!     .evidence("reachable", false);
//! ```

use crate::{
    ActionInfo, Comparison, FailureMode, InvariantInfo, Kv, Metadata, MetricCheck, ParamInfo, Risk,
    SettingInfo, SettingKind, Severity, Signal, SignalCheck, Violation, kv,
};

/// A declared setting.
pub type Setting = SettingInfo;
/// A declared invariant.
pub type Invariant = InvariantInfo;
/// A declared action.
pub type Action = ActionInfo;
/// A machine-checkable clue for a failure mode.
pub type Check = SignalCheck;

impl Metadata {
    /// Metadata with a name and version and nothing else yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Metadata {
        Metadata {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            settings: Vec::new(),
            invariants: Vec::new(),
            actions: Vec::new(),
            failure_modes: Vec::new(),
        }
    }

    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    pub fn setting(mut self, setting: SettingInfo) -> Self {
        self.settings.push(setting);
        self
    }

    pub fn invariant(mut self, invariant: InvariantInfo) -> Self {
        self.invariants.push(invariant);
        self
    }

    pub fn action(mut self, action: ActionInfo) -> Self {
        self.actions.push(action);
        self
    }

    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.failure_modes.push(mode);
        self
    }
}

impl SettingInfo {
    fn of(kind: SettingKind, name: &str, description: &str) -> SettingInfo {
        SettingInfo {
            name: name.into(),
            description: description.into(),
            kind,
            required: false,
            default_value: None,
        }
    }

    /// A URL setting: the host grants the plugin its origin.
    pub fn origin(name: &str, description: &str) -> SettingInfo {
        Self::of(SettingKind::Origin, name, description)
    }

    /// A comma-separated list of URLs: the host grants each origin.
    pub fn origins(name: &str, description: &str) -> SettingInfo {
        Self::of(SettingKind::OriginList, name, description)
    }

    /// Any other value (a threshold, a name). Never a network grant.
    pub fn value(name: &str, description: &str) -> SettingInfo {
        Self::of(SettingKind::Value, name, description)
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// The value the plugin uses when the user sets none (shown in help).
    pub fn default_value(mut self, value: impl ToString) -> Self {
        self.default_value = Some(value.to_string());
        self
    }
}

impl InvariantInfo {
    pub fn new(id: &str, name: &str, severity: Severity) -> InvariantInfo {
        InvariantInfo {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            severity,
        }
    }

    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}

impl ActionInfo {
    /// A read-only, low-risk action with no parameters; see [`ActionInfo::mutating`].
    pub fn new(id: &str, name: &str) -> ActionInfo {
        ActionInfo {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            params: Vec::new(),
            mutates: false,
            risk: Risk::Low,
        }
    }

    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// A required parameter.
    pub fn param(mut self, name: &str, description: &str) -> Self {
        self.params.push(ParamInfo {
            name: name.into(),
            description: description.into(),
            required: true,
        });
        self
    }

    pub fn optional_param(mut self, name: &str, description: &str) -> Self {
        self.params.push(ParamInfo {
            name: name.into(),
            description: description.into(),
            required: false,
        });
        self
    }

    /// Marks the action as changing the subject: the host runs it only with the user's
    /// permission.
    pub fn mutating(mut self, risk: Risk) -> Self {
        self.mutates = true;
        self.risk = risk;
        self
    }
}

impl SignalCheck {
    /// This invariant is currently violated.
    pub fn invariant(id: &str) -> SignalCheck {
        SignalCheck::Invariant(id.into())
    }

    /// A current violation carries this evidence key with this value.
    pub fn evidence(key: &str, value: impl ToString) -> SignalCheck {
        SignalCheck::Evidence(kv(key, value))
    }

    /// A component of this kind is in this state (`up`, `degraded`, `down`).
    pub fn component_state(kind: &str, state: &str) -> SignalCheck {
        SignalCheck::ComponentState(kv(kind, state))
    }

    /// Some component's attribute has this value.
    pub fn attribute(key: &str, value: impl ToString) -> SignalCheck {
        SignalCheck::Attribute(kv(key, value))
    }

    /// A metric compared with a threshold, over samples carrying all of `labels`.
    pub fn metric(
        name: &str,
        labels: &[(&str, &str)],
        comparison: Comparison,
        threshold: f64,
    ) -> SignalCheck {
        SignalCheck::Metric(MetricCheck {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| kv(*k, v)).collect(),
            comparison,
            threshold,
        })
    }

    /// Some recent event's message contains this text.
    pub fn event(text: &str) -> SignalCheck {
        SignalCheck::Event(text.into())
    }
}

impl Signal {
    pub fn new(description: &str, check: SignalCheck, weight: f32) -> Signal {
        Signal {
            description: description.into(),
            check,
            weight,
        }
    }
}

impl FailureMode {
    pub fn new(id: &str, name: &str) -> FailureMode {
        FailureMode {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            signals_for: Vec::new(),
            signals_against: Vec::new(),
            suggested_action: None,
            suggested_params: Vec::new(),
        }
    }

    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// A clue that this mode is the cause, weighted 0.0 to 1.0.
    pub fn signal_for(mut self, description: &str, check: SignalCheck, weight: f32) -> Self {
        self.signals_for
            .push(Signal::new(description, check, weight));
        self
    }

    /// A clue that it is not.
    pub fn signal_against(mut self, description: &str, check: SignalCheck, weight: f32) -> Self {
        self.signals_against
            .push(Signal::new(description, check, weight));
        self
    }

    /// The action this mode suggests; parameter values may name evidence keys as `{key}`.
    pub fn suggests(mut self, action: &str, params: &[(&str, &str)]) -> Self {
        self.suggested_action = Some(action.into());
        self.suggested_params = params.iter().map(|(k, v)| kv(*k, v)).collect();
        self
    }
}

impl Violation {
    /// A violation of `invariant`. The dedup key is `{invariant}:{key}`: keep `key` stable
    /// for one problem (an id, not a message with numbers in it).
    pub fn new(invariant: &str, severity: Severity, key: &str) -> Violation {
        Violation {
            invariant: invariant.into(),
            severity,
            component: String::new(),
            summary: String::new(),
            evidence: Vec::new(),
            dedup_key: format!("{invariant}:{key}"),
        }
    }

    pub fn component(mut self, component: impl Into<String>) -> Self {
        self.component = component.into();
        self
    }

    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = summary.into();
        self
    }

    /// Adds one evidence item; the first items are the most telling.
    pub fn evidence(mut self, key: &str, value: impl ToString) -> Self {
        self.evidence.push(kv(key, value));
        self
    }

    /// Adds several evidence items at once.
    pub fn evidence_all(mut self, items: impl IntoIterator<Item = Kv>) -> Self {
        self.evidence.extend(items);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_every_field() {
        let m = Metadata::new("web", "1.0.0")
            .describe("d")
            .setting(Setting::origin("url", "base").required())
            .setting(Setting::value("t", "threshold").default_value(5))
            .invariant(Invariant::new("W-1", "up", Severity::Critical).describe("x"))
            .action(
                Action::new("A-1", "restart")
                    .param("node", "which")
                    .mutating(Risk::High),
            )
            .failure_mode(
                FailureMode::new("F-1", "crash")
                    .signal_for("fires", Check::invariant("W-1"), 0.5)
                    .signal_against("answers", Check::evidence("reachable", true), 0.8)
                    .suggests("A-1", &[("node", "{node}")]),
            );
        assert_eq!(m.settings.len(), 2);
        assert!(m.settings[0].required);
        assert_eq!(m.settings[1].default_value.as_deref(), Some("5"));
        assert!(m.actions[0].mutates);
        assert!(matches!(m.actions[0].risk, Risk::High));
        let f = &m.failure_modes[0];
        assert_eq!(f.suggested_action.as_deref(), Some("A-1"));
        assert!(
            matches!(&f.signals_against[0].check, SignalCheck::Evidence(kv) if kv.value == "true")
        );
        let v = Violation::new("W-1", Severity::Warning, "web")
            .component("web")
            .evidence("n", 3);
        assert_eq!(v.dedup_key, "W-1:web");
        assert_eq!(v.evidence[0].value, "3");
    }
}
