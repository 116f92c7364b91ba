//! How an observation is stored: a BLOB of [`MAGIC`] followed by the observation in
//! postcard (serde's compact binary form: varint lengths, no field names), deflated (zlib).
//! Observations repeat metric names, label keys and timestamps, so deflate still shrinks
//! them severalfold.
//!
//! Rows written by earlier versions still read: JSON TEXT (the first format) and deflated
//! JSON BLOBs (the second, which begin with zlib's header byte, never with [`MAGIC`]).
//! JSON went: serialising and deflating it was 40% of the store's share of a live tick
//! (perf). The rate limiter's observation is 85 KB of JSON and 49 KB of postcard, written
//! without escaping or field names, so both steps have less to do.

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

/// What a row in the current format begins with. A zlib stream's first byte is 0x78 for
/// every window size deflate uses, and JSON text starts with `{`; neither is `O`.
pub const MAGIC: &[u8; 4] = b"OBS\x01";

thread_local! {
    /// One compressor per thread, reset between observations: a fresh one allocates and
    /// zeroes its dictionary and hash tables (a few hundred KiB) for every tick.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), true));
    /// The serialised form before deflating, kept between ticks (it is the same size each
    /// tick, and growing it anew every time shows up as page faults).
    static RAW: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub fn encode(observation: &Observation) -> Result<Vec<u8>, StoreError> {
    RAW.with_borrow_mut(|raw| {
        raw.clear();
        let raw = postcard::to_io(observation, &mut *raw)
            .map_err(|e| StoreError::Corrupt(format!("serialising an observation: {e}")))?;
        deflate(raw)
    })
}

fn deflate(raw: &[u8]) -> Result<Vec<u8>, StoreError> {
    // Fast level: the stored size is what matters, and level 1 gets most of it.
    DEFLATE.with_borrow_mut(|z| {
        z.reset();
        let mut out = Vec::with_capacity(raw.len() / 4 + 64);
        out.extend_from_slice(MAGIC);
        loop {
            let consumed = z.total_in() as usize;
            let status = z
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Finish)
                .map_err(|e| StoreError::Corrupt(format!("compressing an observation: {e}")))?;
            if status == Status::StreamEnd {
                return Ok(out);
            }
            // The output is full: give it room and go on where it stopped.
            out.reserve(out.capacity().max(1024));
        }
    })
}

fn inflate(z: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    ZlibDecoder::new(z)
        .take(MAX_INFLATED)
        .read_to_end(&mut out)?;
    Ok(out)
}

pub fn decode(id: i64, value: ValueRef<'_>) -> Result<Observation, StoreError> {
    let bad = |e: String| StoreError::Corrupt(format!("observation {id}: {e}"));
    match value {
        ValueRef::Text(json) => serde_json::from_slice(json).map_err(|e| bad(e.to_string())),
        ValueRef::Blob(blob) => match blob.strip_prefix(MAGIC) {
            Some(z) => {
                let raw = inflate(z).map_err(|e| bad(format!("inflating: {e}")))?;
                postcard::from_bytes(&raw).map_err(|e| bad(format!("decoding: {e}")))
            }
            None => {
                let json = inflate(blob).map_err(|e| bad(format!("inflating: {e}")))?;
                serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))
            }
        },
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
            components: vec![operator_model::Component {
                id: "n1".into(),
                kind: "node".into(),
                address: "http://n1".into(),
                state: operator_model::ComponentState::Degraded,
                attributes: [("k".to_string(), "v".to_string())].into_iter().collect(),
            }],
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
            events: vec![operator_model::Event {
                timestamp_ms: 5,
                component: "n1".into(),
                severity: operator_model::Severity::Warning,
                message: "m".into(),
                attributes: Default::default(),
            }],
            problems: vec![operator_model::Problem {
                source: "n1".into(),
                message: "p".into(),
            }],
        };
        let z = encode(&o).unwrap();
        assert!(z.starts_with(MAGIC));
        let json = serde_json::to_vec(&o).unwrap();
        assert!(z.len() * 5 < json.len(), "{} vs {}", z.len(), json.len());
        assert_eq!(decode(1, ValueRef::Blob(&z)).unwrap(), o);
        // The thread's compressor and buffer are reused: the next one must be whole too.
        assert_eq!(encode(&o).unwrap(), z, "a reset compressor starts afresh");
        // Both earlier formats still read: JSON text, and deflated JSON.
        assert_eq!(decode(1, ValueRef::Text(&json)).unwrap(), o);
        let mut old = flate2::write::ZlibEncoder::new(Vec::new(), Compression::fast());
        std::io::Write::write_all(&mut old, &json).unwrap();
        let old = old.finish().unwrap();
        assert_eq!(decode(1, ValueRef::Blob(&old)).unwrap(), o);
        assert!(decode(1, ValueRef::Blob(b"not zlib")).is_err());
    }

    #[test]
    fn corrupt_rows_are_errors_naming_the_row() {
        let o = Observation {
            timestamp_ms: 7,
            components: vec![],
            metrics: Default::default(),
            events: vec![],
            problems: vec![],
        };
        let good = encode(&o).unwrap();
        // Cut short, bit-flipped, a deflated stream of garbage, and nothing after the magic.
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let garbage = {
            let mut z = MAGIC.to_vec();
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::fast());
            std::io::Write::write_all(&mut e, &[0xff; 64]).unwrap();
            z.extend(e.finish().unwrap());
            z
        };
        for blob in [
            &good[..good.len() - 3],
            &flipped[..],
            &garbage[..],
            &MAGIC[..],
        ] {
            let e = decode(42, ValueRef::Blob(blob)).unwrap_err().to_string();
            assert!(e.contains("observation 42"), "{e}");
        }
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
