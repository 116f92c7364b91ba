//! How an observation is stored: JSON, deflated (zlib), as a BLOB. Observations repeat
//! metric names, label keys and timestamps, so they shrink about tenfold; the JSON inside
//! stays readable with any zlib tool. Rows written before this (JSON TEXT) still read.

use crate::StoreError;
use flate2::read::ZlibDecoder;
use flate2::{Compress, Compression, FlushCompress, Status};
use operator_model::Observation;
use rusqlite::types::ValueRef;
use std::cell::RefCell;
use std::io::Read;

/// The most a stored observation may inflate to: a corrupt or hostile row cannot make a
/// reader allocate without bound.
const MAX_INFLATED: u64 = 256 * 1024 * 1024;

thread_local! {
    /// One compressor per thread, reset between observations: a fresh one allocates and
    /// zeroes its dictionary and hash tables (a few hundred KiB) for every tick.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), true));
}

pub fn encode(observation: &Observation) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(observation).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    // Fast level: the stored size is what matters, and level 1 gets most of it.
    DEFLATE.with_borrow_mut(|z| {
        z.reset();
        let mut out = Vec::with_capacity(json.len() / 6 + 64);
        loop {
            let consumed = z.total_in() as usize;
            let status = z
                .compress_vec(&json[consumed..], &mut out, FlushCompress::Finish)
                .map_err(|e| StoreError::Corrupt(format!("compressing an observation: {e}")))?;
            if status == Status::StreamEnd {
                return Ok(out);
            }
            // The output is full: give it room and go on where it stopped.
            out.reserve(out.capacity().max(1024));
        }
    })
}

pub fn decode(id: i64, value: ValueRef<'_>) -> Result<Observation, StoreError> {
    let bad = |e: String| StoreError::Corrupt(format!("observation {id}: {e}"));
    match value {
        ValueRef::Text(json) => serde_json::from_slice(json).map_err(|e| bad(e.to_string())),
        ValueRef::Blob(z) => {
            let mut json = Vec::new();
            ZlibDecoder::new(z)
                .take(MAX_INFLATED)
                .read_to_end(&mut json)
                .map_err(|e| bad(format!("inflating: {e}")))?;
            serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))
        }
        other => Err(bad(format!(
            "unexpected column type {:?}",
            other.data_type()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use operator_model::MetricSample;

    #[test]
    fn round_trips_shrinks_and_reads_old_text_rows() {
        let o = Observation {
            timestamp_ms: 7,
            components: vec![],
            metrics: (0..200)
                .map(|i| MetricSample {
                    name: "some_histogram_bucket".into(),
                    labels: [
                        ("le".to_string(), format!("{i}")),
                        ("node".into(), "n1".into()),
                    ]
                    .into_iter()
                    .collect(),
                    value: i as f64,
                    timestamp_ms: 7,
                })
                .collect(),
            events: vec![],
            problems: vec![],
        };
        let z = encode(&o).unwrap();
        let json = serde_json::to_vec(&o).unwrap();
        assert!(z.len() * 5 < json.len(), "{} vs {}", z.len(), json.len());
        assert_eq!(decode(1, ValueRef::Blob(&z)).unwrap(), o);
        // The thread's compressor is reused: the next one must be whole too.
        assert_eq!(encode(&o).unwrap(), z, "a reset compressor starts afresh");
        assert_eq!(decode(1, ValueRef::Text(&json)).unwrap(), o);
        assert!(decode(1, ValueRef::Blob(b"not zlib")).is_err());
    }

    #[test]
    fn incompressible_observations_round_trip() {
        // Values that never repeat compress poorly, so the output outgrows its first guess.
        let mut x: u64 = 1;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x
        };
        let o = Observation {
            timestamp_ms: 7,
            components: vec![],
            metrics: (0..2000)
                .map(|i| MetricSample {
                    name: format!("m{:016x}", next()),
                    labels: [("k".to_string(), format!("{:016x}{:016x}", next(), next()))]
                        .into_iter()
                        .collect(),
                    value: i as f64,
                    timestamp_ms: next(),
                })
                .collect(),
            events: vec![],
            problems: vec![],
        };
        let z = encode(&o).unwrap();
        assert_eq!(decode(1, ValueRef::Blob(&z)).unwrap(), o);
    }
}
