//! Contract 0.5.0 (`wit/since_v0.5.0`), the newest: the host imports are implemented for
//! these types in `runtime::imports`, and older versions forward to them. Its observations
//! carry their metric samples as a table, which the host keeps as it arrives once checked.

use crate::model;

wasmtime::component::bindgen!({
    world: "subject",
    path: "../wit/since_v0.5.0",
    imports: { default: async },
    exports: { default: async },
});

pub use self::operator::subject::types as wit;

super::convert::common_conversions!();

super::convert::settings_conversions!();

/// The plugin's observation in the host's model: its metric table taken as it is, after
/// checking that every index in it is inside it.
pub fn observation(o: wit::Observation) -> Result<model::Observation, model::TableError> {
    let t = o.metrics;
    let samples = t
        .samples
        .into_iter()
        .map(|s| model::Packed {
            name: s.name,
            first_label: s.first_label,
            label_count: s.label_count,
            value: s.value,
            timestamp_ms: s.timestamp_ms,
        })
        .collect();
    Ok(model::Observation {
        timestamp_ms: o.timestamp_ms,
        components: components(o.components),
        metrics: model::Metrics::from_table(t.strings, samples, t.labels)?,
        events: events(o.events),
        problems: problems(o.problems),
    })
}

impl From<&model::Observation> for wit::Observation {
    fn from(o: &model::Observation) -> Self {
        let (strings, samples, labels) = o.metrics.table();
        wit::Observation {
            timestamp_ms: o.timestamp_ms,
            components: wit_components(&o.components),
            metrics: wit::MetricTable {
                strings: strings.to_vec(),
                samples: samples
                    .iter()
                    .map(|s| wit::TableSample {
                        name: s.name,
                        first_label: s.first_label,
                        label_count: s.label_count,
                        value: s.value,
                        timestamp_ms: s.timestamp_ms,
                    })
                    .collect(),
                labels: labels.to_vec(),
            },
            events: wit_events(&o.events),
            problems: wit_problems(&o.problems),
        }
    }
}
