//! Conversions between a contract version's generated types and the host's model.
//!
//! The records shared by every version are converted by one macro, expanded inside each
//! version's module (where `wit` names that version's types), so a new version costs one
//! line here plus whatever it changed.

/// Expands to the `From` impls between `wit::*` (the calling module's version) and
/// `crate::model::*` for the records every contract version shares.
macro_rules! common_conversions {
    () => {
        /// A `Kv` is laid out as a pair of strings, so this collects in place: the list the
        /// plugin's labels were lifted into becomes the model's, with nothing allocated.
        fn labels(kvs: Vec<wit::Kv>) -> model::Labels {
            model::Labels::from_pairs(kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
        }

        fn kvs(labels: &model::Labels) -> Vec<wit::Kv> {
            labels
                .iter()
                .map(|(k, v)| wit::Kv {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect()
        }

        fn pairs(kvs: Vec<wit::Kv>) -> Vec<(String, String)> {
            kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
        }

        impl From<wit::Severity> for model::Severity {
            fn from(s: wit::Severity) -> Self {
                match s {
                    wit::Severity::Info => model::Severity::Info,
                    wit::Severity::Warning => model::Severity::Warning,
                    wit::Severity::Critical => model::Severity::Critical,
                }
            }
        }

        impl From<model::Severity> for wit::Severity {
            fn from(s: model::Severity) -> Self {
                match s {
                    model::Severity::Info => wit::Severity::Info,
                    model::Severity::Warning => wit::Severity::Warning,
                    model::Severity::Critical => wit::Severity::Critical,
                }
            }
        }

        impl From<wit::ComponentState> for model::ComponentState {
            fn from(s: wit::ComponentState) -> Self {
                match s {
                    wit::ComponentState::Up => model::ComponentState::Up,
                    wit::ComponentState::Degraded => model::ComponentState::Degraded,
                    wit::ComponentState::Down => model::ComponentState::Down,
                    wit::ComponentState::Unknown => model::ComponentState::Unknown,
                }
            }
        }

        impl From<model::ComponentState> for wit::ComponentState {
            fn from(s: model::ComponentState) -> Self {
                match s {
                    model::ComponentState::Up => wit::ComponentState::Up,
                    model::ComponentState::Degraded => wit::ComponentState::Degraded,
                    model::ComponentState::Down => wit::ComponentState::Down,
                    model::ComponentState::Unknown => wit::ComponentState::Unknown,
                }
            }
        }

        fn components(v: Vec<wit::Component>) -> Vec<model::Component> {
            v.into_iter()
                .map(|c| model::Component {
                    id: c.id,
                    kind: c.kind,
                    address: c.address,
                    state: c.state.into(),
                    attributes: labels(c.attributes),
                })
                .collect()
        }

        fn events(v: Vec<wit::Event>) -> Vec<model::Event> {
            v.into_iter()
                .map(|e| model::Event {
                    timestamp_ms: e.timestamp_ms,
                    component: e.component,
                    severity: e.severity.into(),
                    message: e.message,
                    attributes: labels(e.attributes),
                })
                .collect()
        }

        fn problems(v: Vec<wit::Problem>) -> Vec<model::Problem> {
            v.into_iter()
                .map(|p| model::Problem {
                    source: p.source,
                    message: p.message,
                })
                .collect()
        }

        fn wit_components(v: &[model::Component]) -> Vec<wit::Component> {
            v.iter()
                .map(|c| wit::Component {
                    id: c.id.clone(),
                    kind: c.kind.clone(),
                    address: c.address.clone(),
                    state: c.state.into(),
                    attributes: kvs(&c.attributes),
                })
                .collect()
        }

        fn wit_events(v: &[model::Event]) -> Vec<wit::Event> {
            v.iter()
                .map(|e| wit::Event {
                    timestamp_ms: e.timestamp_ms,
                    component: e.component.clone(),
                    severity: e.severity.into(),
                    message: e.message.clone(),
                    attributes: kvs(&e.attributes),
                })
                .collect()
        }

        fn wit_problems(v: &[model::Problem]) -> Vec<wit::Problem> {
            v.iter()
                .map(|p| wit::Problem {
                    source: p.source.clone(),
                    message: p.message.clone(),
                })
                .collect()
        }

        impl From<wit::ObserveError> for model::ObserveError {
            fn from(e: wit::ObserveError) -> Self {
                match e {
                    wit::ObserveError::Unreachable(m) => model::ObserveError::Unreachable(m),
                    wit::ObserveError::BadData(m) => model::ObserveError::BadData(m),
                    wit::ObserveError::Config(m) => model::ObserveError::Config(m),
                }
            }
        }

        impl From<wit::Violation> for model::Violation {
            fn from(v: wit::Violation) -> Self {
                model::Violation {
                    invariant: v.invariant,
                    severity: v.severity.into(),
                    component: v.component,
                    summary: v.summary,
                    evidence: pairs(v.evidence),
                    dedup_key: v.dedup_key,
                }
            }
        }

        fn signal(s: wit::Signal) -> model::Signal {
            let check = match s.check {
                wit::SignalCheck::Invariant(id) => model::SignalCheck::Invariant { id },
                wit::SignalCheck::Evidence(kv) => model::SignalCheck::Evidence {
                    key: kv.key,
                    value: kv.value,
                },
                wit::SignalCheck::ComponentState(kv) => model::SignalCheck::ComponentState {
                    kind: kv.key,
                    state: kv.value,
                },
                wit::SignalCheck::Attribute(kv) => model::SignalCheck::Attribute {
                    key: kv.key,
                    value: kv.value,
                },
                wit::SignalCheck::Metric(m) => model::SignalCheck::Metric {
                    name: m.name,
                    labels: labels(m.labels),
                    comparison: match m.comparison {
                        wit::Comparison::Greater => model::Comparison::Greater,
                        wit::Comparison::Less => model::Comparison::Less,
                        wit::Comparison::Equal => model::Comparison::Equal,
                    },
                    threshold: m.threshold,
                },
                wit::SignalCheck::Event(contains) => model::SignalCheck::Event { contains },
            };
            model::Signal {
                description: s.description,
                check,
                weight: s.weight.clamp(0.0, 1.0),
            }
        }

        fn invariants(v: Vec<wit::InvariantInfo>) -> Vec<model::InvariantInfo> {
            v.into_iter()
                .map(|i| model::InvariantInfo {
                    id: i.id,
                    name: i.name,
                    description: i.description,
                    severity: i.severity.into(),
                })
                .collect()
        }

        fn actions(v: Vec<wit::ActionInfo>) -> Vec<model::ActionInfo> {
            v.into_iter()
                .map(|a| model::ActionInfo {
                    id: a.id,
                    name: a.name,
                    description: a.description,
                    params: a
                        .params
                        .into_iter()
                        .map(|p| model::ParamInfo {
                            name: p.name,
                            description: p.description,
                            required: p.required,
                        })
                        .collect(),
                    mutates: a.mutates,
                    risk: match a.risk {
                        wit::Risk::Low => model::Risk::Low,
                        wit::Risk::Medium => model::Risk::Medium,
                        wit::Risk::High => model::Risk::High,
                    },
                })
                .collect()
        }

        fn failure_modes(v: Vec<wit::FailureMode>) -> Vec<model::FailureMode> {
            v.into_iter()
                .map(|f| model::FailureMode {
                    id: f.id,
                    name: f.name,
                    description: f.description,
                    signals_for: f.signals_for.into_iter().map(signal).collect(),
                    signals_against: f.signals_against.into_iter().map(signal).collect(),
                    suggested_action: f.suggested_action,
                    suggested_params: pairs(f.suggested_params),
                })
                .collect()
        }
    };
}

pub(super) use common_conversions;

/// Expands to the observation conversions of versions that send metric samples as a list
/// (0.1 to 0.4): the host interns their strings into its table as it takes them.
macro_rules! sample_list_conversions {
    () => {
        impl From<wit::Observation> for model::Observation {
            fn from(o: wit::Observation) -> Self {
                let mut metrics = model::MetricsBuilder::new();
                for m in o.metrics {
                    metrics.push(m.name, labels(m.labels), m.value, m.timestamp_ms);
                }
                model::Observation {
                    timestamp_ms: o.timestamp_ms,
                    components: components(o.components),
                    metrics: metrics.finish(),
                    events: events(o.events),
                    problems: problems(o.problems),
                }
            }
        }

        impl From<&model::Observation> for wit::Observation {
            fn from(o: &model::Observation) -> Self {
                wit::Observation {
                    timestamp_ms: o.timestamp_ms,
                    components: wit_components(&o.components),
                    metrics: o
                        .metrics
                        .iter()
                        .map(|m| wit::MetricSample {
                            name: m.name().to_owned(),
                            labels: m
                                .labels()
                                .iter()
                                .map(|(k, v)| wit::Kv {
                                    key: k.to_owned(),
                                    value: v.to_owned(),
                                })
                                .collect(),
                            value: m.value(),
                            timestamp_ms: m.timestamp_ms(),
                        })
                        .collect(),
                    events: wit_events(&o.events),
                    problems: wit_problems(&o.problems),
                }
            }
        }

        /// Never fails: a list of samples has nothing to point outside of.
        pub fn observation(o: wit::Observation) -> Result<model::Observation, model::TableError> {
            Ok(o.into())
        }
    };
}

pub(super) use sample_list_conversions;

/// Expands to the metadata conversion of versions that declare settings (0.2 and later).
macro_rules! settings_conversions {
    () => {
        impl From<wit::SettingKind> for model::SettingKind {
            fn from(k: wit::SettingKind) -> Self {
                match k {
                    wit::SettingKind::Origin => model::SettingKind::Origin,
                    wit::SettingKind::OriginList => model::SettingKind::OriginList,
                    wit::SettingKind::Value => model::SettingKind::Value,
                }
            }
        }

        impl From<wit::SubjectMetadata> for model::SubjectMetadata {
            fn from(m: wit::SubjectMetadata) -> Self {
                model::SubjectMetadata {
                    name: m.name,
                    version: m.version,
                    description: m.description,
                    settings: m
                        .settings
                        .into_iter()
                        .map(|s| model::SettingInfo {
                            name: s.name,
                            description: s.description,
                            kind: s.kind.into(),
                            required: s.required,
                            default_value: s.default_value,
                        })
                        .collect(),
                    invariants: invariants(m.invariants),
                    actions: actions(m.actions),
                    failure_modes: failure_modes(m.failure_modes),
                }
            }
        }
    };
}

pub(super) use settings_conversions;
