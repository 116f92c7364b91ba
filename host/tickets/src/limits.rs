//! Maximum lengths for the strings a plugin hands the store. A plugin is not trusted to keep
//! them small: a 10 MB summary would otherwise be stored twice per ticket and read back on
//! every listing.
//!
//! A cut string ends in a marker that says how much was dropped, `…[+N bytes]`, and stays
//! within its limit including the marker. A dedup key is cut differently: it keeps a prefix
//! and appends `…#` and a 64-bit FNV-1a hash of the whole key, so that two long keys that
//! share a prefix still name two tickets.

use std::borrow::Cow;

/// Ticket summary.
pub const MAX_SUMMARY: usize = 1024;
/// Dedup key (the unique index is on it).
pub const MAX_DEDUP_KEY: usize = 256;
/// Invariant id and component id.
pub const MAX_NAME: usize = 256;
/// One evidence key.
pub const MAX_EVIDENCE_KEY: usize = 128;
/// One evidence value.
pub const MAX_EVIDENCE_VALUE: usize = 2048;
/// Evidence items per violation; the rest are replaced by one `…` item that counts them.
pub const MAX_EVIDENCE_ITEMS: usize = 32;
/// A diagnosis error message or a host-side failure message.
pub const MAX_ERROR: usize = 4096;

/// Cuts `s` to at most `max` bytes (on a char boundary), ending in `…[+N bytes]`.
pub fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    // The marker's length depends on N, which depends on where we cut; the marker is at
    // most 32 bytes, so reserving that much is always enough.
    let keep = floor_char_boundary(s, max.saturating_sub(32));
    Cow::Owned(format!("{}…[+{} bytes]", &s[..keep], s.len() - keep))
}

/// Cuts a dedup key to at most `max` bytes, keeping distinct keys distinct.
pub fn truncate_key(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let suffix = format!("…#{:016x}", fnv1a(s.as_bytes()));
    let keep = floor_char_boundary(s, max.saturating_sub(suffix.len()));
    Cow::Owned(format!("{}{suffix}", &s[..keep]))
}

/// Caps the evidence list: item count, key and value lengths. Returns whether anything
/// was cut.
pub fn cap_evidence(evidence: &[(String, String)]) -> (Vec<(String, String)>, bool) {
    let mut cut = evidence.len() > MAX_EVIDENCE_ITEMS;
    let mut out: Vec<(String, String)> = evidence
        .iter()
        .take(MAX_EVIDENCE_ITEMS)
        .map(|(k, v)| {
            let k2 = truncate(k, MAX_EVIDENCE_KEY);
            let v2 = truncate(v, MAX_EVIDENCE_VALUE);
            cut |= matches!(k2, Cow::Owned(_)) || matches!(v2, Cow::Owned(_));
            (k2.into_owned(), v2.into_owned())
        })
        .collect();
    if evidence.len() > MAX_EVIDENCE_ITEMS {
        out.push((
            "…".into(),
            format!(
                "{} more evidence items dropped",
                evidence.len() - MAX_EVIDENCE_ITEMS
            ),
        ));
    }
    (out, cut)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// FNV-1a, 64 bit: stable across Rust releases (std's hasher is not), so the same long key
/// maps to the same stored key after an upgrade.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_untouched_and_long_ones_fit_with_a_marker() {
        assert!(matches!(truncate("abc", 10), Cow::Borrowed("abc")));
        let long = "é".repeat(5000); // 2 bytes a char: cuts must land on boundaries
        let t = truncate(&long, MAX_SUMMARY);
        assert!(t.len() <= MAX_SUMMARY, "{}", t.len());
        assert!(t.ends_with(" bytes]"), "{t}");
        let kept = t.split('…').next().unwrap().len();
        assert!(t.contains(&format!("[+{} bytes]", long.len() - kept)));
    }

    #[test]
    fn long_keys_that_share_a_prefix_stay_distinct() {
        let a = format!("{}a", "k".repeat(1000));
        let b = format!("{}b", "k".repeat(1000));
        let (ta, tb) = (
            truncate_key(&a, MAX_DEDUP_KEY),
            truncate_key(&b, MAX_DEDUP_KEY),
        );
        assert!(ta.len() <= MAX_DEDUP_KEY && tb.len() <= MAX_DEDUP_KEY);
        assert_ne!(ta, tb);
        assert_eq!(ta, truncate_key(&a, MAX_DEDUP_KEY), "stable");
    }

    #[test]
    fn evidence_is_capped_in_count_and_size() {
        let ev: Vec<(String, String)> = (0..100)
            .map(|i| (format!("k{i}"), "v".repeat(if i == 0 { 10_000 } else { 1 })))
            .collect();
        let (out, cut) = cap_evidence(&ev);
        assert!(cut);
        assert_eq!(out.len(), MAX_EVIDENCE_ITEMS + 1);
        assert!(out[0].1.len() <= MAX_EVIDENCE_VALUE);
        assert_eq!(out.last().unwrap().1, "68 more evidence items dropped");
        let (same, cut) = cap_evidence(&ev[1..3]);
        assert!(!cut);
        assert_eq!(same, ev[1..3]);
    }
}
