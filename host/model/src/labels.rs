//! [`Labels`]: a sample's labels or a component's attributes, keys sorted and distinct.
//!
//! It was a `BTreeMap<String, String>`. An observation holds one per sample and component
//! (hundreds per tick, a handful of entries each), and a B-tree spends a whole node
//! allocation on each, builds it through a sorted buffer, and walks it node by node to drop
//! it. A sorted list holds the same pairs in the allocation they arrived in: the plugin
//! sends them in key order, so converting them moves the list, with nothing to allocate.
//! Lookups are a scan (few entries) or a binary search.
//!
//! Serialised as a map in key order, exactly as the B-tree was, so stored rows and JSON
//! output are byte for byte what they were.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Keys sorted and distinct; when a key comes more than once, the last value is kept (as a
/// map would).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    pub fn new() -> Labels {
        Labels(Vec::new())
    }

    /// From pairs in any order. Pairs already sorted with distinct keys (what plugins send)
    /// are kept as they are, in their own allocation.
    pub fn from_pairs(mut pairs: Vec<(String, String)>) -> Labels {
        if pairs.windows(2).all(|w| w[0].0 < w[1].0) {
            return Labels(pairs);
        }
        // Stable: among equal keys the original order stays, so the last one can be kept:
        // `dedup_by` drops the later of two equal neighbours after handing it its value.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        Labels(pairs)
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key`, returning the value it replaced.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut String) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    /// Keeps the first `len` pairs in key order.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Pairs in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &String)> + Clone {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> + Clone {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &String> + Clone {
        self.0.iter().map(|(_, v)| v)
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Labels {
        Labels::from_pairs(iter.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Labels {
        Labels::from_pairs(pairs.into())
    }
}

impl std::ops::Index<&str> for Labels {
    type Output = String;

    /// Panics when `key` is absent, as a map's indexing does.
    fn index(&self, key: &str) -> &String {
        self.get(key)
            .unwrap_or_else(|| panic!("no label or attribute `{key}`"))
    }
}

impl IntoIterator for Labels {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Labels;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                // The hint comes from the input: capped, so a hostile length cannot reserve
                // memory the entries never fill.
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(Labels::from_pairs(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Whatever order and repeats come in, the result is the map a `BTreeMap` would make.
    #[test]
    fn agrees_with_a_btreemap() {
        let cases = [
            pairs(&[]),
            pairs(&[("a", "1")]),
            pairs(&[("a", "1"), ("b", "2"), ("c", "3")]),
            pairs(&[("c", "3"), ("a", "1"), ("b", "2")]),
            pairs(&[("b", "1"), ("a", "1"), ("b", "2"), ("c", "0"), ("b", "3")]),
            pairs(&[("x", "1"), ("x", "2")]),
        ];
        for case in cases {
            let ours = Labels::from_pairs(case.clone());
            let map: BTreeMap<String, String> = case.into_iter().collect();
            let got: Vec<(&String, &String)> = ours.iter().collect();
            let want: Vec<(&String, &String)> = map.iter().collect();
            assert_eq!(got, want);
            for k in ["a", "b", "c", "x", "zz"] {
                assert_eq!(ours.get(k), map.get(k), "{k}");
            }
        }
    }

    #[test]
    fn sorted_input_keeps_its_allocation() {
        let p = pairs(&[("a", "1"), ("b", "2")]);
        let ptr = p.as_ptr();
        let l = Labels::from_pairs(p);
        assert_eq!(l.0.as_ptr(), ptr);
    }

    #[test]
    fn insert_remove_retain_keep_it_sorted() {
        let mut l = Labels::new();
        assert_eq!(l.insert("b".into(), "1".into()), None);
        assert_eq!(l.insert("a".into(), "1".into()), None);
        assert_eq!(l.insert("c".into(), "1".into()), None);
        assert_eq!(l.insert("b".into(), "2".into()), Some("1".into()));
        assert_eq!(l.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(l["b"], "2");
        assert_eq!(l.remove("a"), Some("1".into()));
        l.retain(|k, _| k != "c");
        assert_eq!(l.iter().collect::<Vec<_>>(), [(&"b".into(), &"2".into())]);
        assert!(!l.contains_key("c"));
    }

    /// Serialised as the map it replaced, and read back from one (stored rows were written
    /// from a `BTreeMap`).
    #[test]
    fn serde_matches_the_map_it_replaced() {
        let map: BTreeMap<String, String> = pairs(&[("node", "n1"), ("key", "k"), ("window", "7")])
            .into_iter()
            .collect();
        let ours: Labels = map.clone().into_iter().collect();
        assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        let back: Labels = serde_json::from_str(r#"{"b":"2","a":"1","b":"3"}"#).unwrap();
        assert_eq!(back, Labels::from_pairs(pairs(&[("a", "1"), ("b", "3")])));
        assert!(serde_json::from_str::<Labels>(r#"{"a":1}"#).is_err());
        // Stored observations are postcard.
        let bytes = postcard::to_stdvec(&ours).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&map).unwrap());
        assert_eq!(postcard::from_bytes::<Labels>(&bytes).unwrap(), ours);
    }
}
