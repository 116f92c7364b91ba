//! Prometheus text exposition format (0.0.4) parsing, histogram math, and a client for the
//! Prometheus HTTP query API.

use crate::{Kv, MetricSample, Metrics, http};
use std::borrow::Cow;
use std::fmt;

/// Label pairs in exposition order.
pub type Labels = Vec<(String, String)>;

/// One parsed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Converts to the WIT sample type with the given timestamp.
    pub fn into_metric(self, timestamp_ms: u64) -> MetricSample {
        MetricSample {
            name: self.name,
            labels: self
                .labels
                .into_iter()
                .map(|(key, value)| Kv { key, value })
                .collect(),
            value: self.value,
            timestamp_ms,
        }
    }

    /// [`Sample::into_metric`] with one more label (say, the node it was scraped from).
    /// It goes before the first label that does not sort before it (so a scraped label of
    /// the same name comes after it, and is the one a host that keeps the last of equal keys
    /// keeps); labels that came sorted stay sorted, in a list allocated once.
    pub fn into_metric_with(self, timestamp_ms: u64, extra: (&str, &str)) -> MetricSample {
        let mut labels = Vec::with_capacity(self.labels.len() + 1);
        let mut pending = Some(extra);
        for (key, value) in self.labels {
            if let Some((k, v)) = pending.filter(|(k, _)| *k <= key.as_str()) {
                labels.push(crate::kv(k, v));
                pending = None;
            }
            labels.push(Kv { key, value });
        }
        if let Some((k, v)) = pending {
            labels.push(crate::kv(k, v));
        }
        MetricSample {
            name: self.name,
            labels,
            value: self.value,
            timestamp_ms,
        }
    }
}

/// A malformed exposition, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole exposition. Any malformed sample line fails the parse: a half-read
/// scrape would make deltas and ratios silently wrong.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    Ok(parse_borrowed(text)?
        .iter()
        .map(|s| Sample {
            name: s.name.to_owned(),
            labels: (s.labels.iter())
                .map(|(k, v)| ((*k).to_owned(), v.clone().into_owned()))
                .collect(),
            value: s.value,
        })
        .collect())
}

/// A parsed exposition whose names, keys and values borrow from the text (a label value
/// is copied only if it had escapes). A scrape's samples were each a name, a list and two
/// strings per label, allocated to be interned into an observation and freed; here the
/// whole scrape is two vectors.
pub struct Scrape<'t> {
    samples: Vec<(&'t str, u32, u32, f64)>,
    labels: Vec<(&'t str, Cow<'t, str>)>,
}

/// One sample of a [`Scrape`].
#[derive(Clone, Copy)]
pub struct Parsed<'t, 's> {
    pub name: &'t str,
    /// In exposition order.
    pub labels: &'s [(&'t str, Cow<'t, str>)],
    pub value: f64,
}

impl<'t> Scrape<'t> {
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Parsed<'t, '_>> {
        self.samples
            .iter()
            .map(move |&(name, first, count, value)| Parsed {
                name,
                labels: &self.labels[first as usize..(first + count) as usize],
                value,
            })
    }
}

impl<'s> Parsed<'_, 's> {
    pub fn label(&self, key: &str) -> Option<&'s str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Pushes this sample onto `metrics` without the labels named in `drop` and with
    /// `extra` (placed as [`Sample::into_metric_with`] places it). Returns its position.
    pub fn push_to(
        &self,
        metrics: &mut Metrics,
        timestamp_ms: u64,
        extra: Option<(&str, &str)>,
        drop: &[&str],
    ) -> usize {
        let mut pending = extra;
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(self.labels.len() + 1);
        for (key, value) in self.labels.iter().filter(|(k, _)| !drop.contains(k)) {
            if let Some(e) = pending.filter(|(k, _)| k <= key) {
                labels.push(e);
                pending = None;
            }
            labels.push((key, value.as_ref()));
        }
        labels.extend(pending);
        metrics.push(self.name, &labels, self.value, timestamp_ms)
    }
}

/// [`parse`], borrowing from `text`.
pub fn parse_borrowed(text: &str) -> Result<Scrape<'_>, ParseError> {
    let mut scrape = Scrape {
        samples: Vec::new(),
        labels: Vec::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        parse_line(line, &mut scrape).map_err(|message| ParseError {
            line: i + 1,
            message,
        })?;
    }
    Ok(scrape)
}

fn parse_line<'t>(line: &'t str, out: &mut Scrape<'t>) -> Result<(), String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("expected a metric name in `{}`", clip(line)));
    }
    let mut rest = &line[name_end..];
    let first = out.labels.len();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut out.labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value_text = fields
        .next()
        .ok_or_else(|| format!("missing value in `{}`", clip(line)))?;
    let value =
        parse_value(value_text).ok_or_else(|| format!("bad value `{value_text}` for {name}"))?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp `{ts}` for {name}"))?;
    }
    if fields.next().is_some() {
        return Err(format!("trailing text in `{}`", clip(line)));
    }
    let count = out.labels.len() - first;
    out.samples.push((name, first as u32, count as u32, value));
    Ok(())
}

/// Appends the labels at the start of `s` (after its `{`) to `out`; returns what follows
/// the closing `}`.
fn parse_labels<'t>(
    mut s: &'t str,
    out: &mut Vec<(&'t str, Cow<'t, str>)>,
) -> Result<&'t str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name `{key}`"));
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("label value must be quoted")?;
        let (value, end) = label_value(s)?;
        out.push((key, value));
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

/// The quoted label value at the start of `s` (after its opening quote), unescaped, and
/// the index of its closing quote. Values without a backslash, nearly all of them, are
/// borrowed as they are.
fn label_value(s: &str) -> Result<(Cow<'_, str>, usize), String> {
    let bytes = s.as_bytes();
    match bytes.iter().position(|b| matches!(b, b'"' | b'\\')) {
        None => return Err("unterminated label value".into()),
        Some(i) if bytes[i] == b'"' => return Ok((Cow::Borrowed(&s[..i]), i)),
        Some(_) => {}
    }
    let mut value = String::with_capacity(s.len().min(64));
    let mut chars = s.char_indices();
    let end = loop {
        match chars.next() {
            None => return Err("unterminated label value".into()),
            Some((i, '"')) => break i,
            Some((_, '\\')) => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, c)) => value.push(c),
                None => return Err("unterminated escape".into()),
            },
            Some((_, c)) => value.push(c),
        }
    };
    Ok((Cow::Owned(value), end))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A cumulative histogram: `(upper bound, cumulative count)` sorted by bound, with +Inf.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// Builds the histogram `name` from samples whose labels include all of `filter`
    /// (extra labels are summed over).
    pub fn from_samples<'a>(
        samples: impl IntoIterator<Item = (&'a str, &'a [(String, String)], f64)>,
        name: &str,
        filter: &[(&str, &str)],
    ) -> Option<Histogram> {
        Histogram::fold(
            samples
                .into_iter()
                .map(|(n, labels, v)| (n, labels.iter().map(|(k, v)| (k.as_str(), v.as_str())), v)),
            name,
            filter,
        )
    }

    /// [`Histogram::from_samples`] over labels given as pairs: the lookups over
    /// observations fold their samples where they lie instead of copying them.
    pub(crate) fn fold<'a, L: Iterator<Item = (&'a str, &'a str)> + Clone>(
        samples: impl IntoIterator<Item = (&'a str, L, f64)>,
        name: &str,
        filter: &[(&str, &str)],
    ) -> Option<Histogram> {
        let bucket_name = format!("{name}_bucket");
        let sum_name = format!("{name}_sum");
        let count_name = format!("{name}_count");
        let mut h = Histogram::default();
        let mut seen = false;
        for (n, mut labels, value) in samples {
            let matches = filter
                .iter()
                .all(|(k, v)| labels.clone().any(|(lk, lv)| lk == *k && lv == *v));
            if !matches {
                continue;
            }
            if n == bucket_name {
                let le = labels
                    .find(|(k, _)| *k == "le")
                    .and_then(|(_, v)| parse_value(v));
                if let Some(le) = le {
                    seen = true;
                    match h.buckets.iter_mut().find(|(b, _)| *b == le) {
                        Some(slot) => slot.1 += value,
                        None => h.buckets.push((le, value)),
                    }
                }
            } else if n == sum_name {
                h.sum += value;
            } else if n == count_name {
                h.count += value;
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        seen.then_some(h)
    }

    /// Observations made between `earlier` and `self` (for counters that only grow). A
    /// counter that went backwards means the process restarted: the later histogram is
    /// then the whole delta.
    pub fn delta(&self, earlier: &Histogram) -> Histogram {
        if self.count < earlier.count {
            return self.clone();
        }
        let buckets = self
            .buckets
            .iter()
            .map(|(le, c)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |(_, c)| *c);
                (*le, (c - before).max(0.0))
            })
            .collect();
        Histogram {
            buckets,
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The q-quantile (0..=1) by linear interpolation within the bucket, the way
    /// Prometheus's `histogram_quantile` does. None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last().map(|(_, c)| *c)?;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut prev_le = 0.0;
        let mut prev_count = 0.0;
        for (le, count) in &self.buckets {
            if *count >= rank {
                if le.is_infinite() {
                    // Prometheus answers with the highest finite bound here.
                    return Some(prev_le);
                }
                let in_bucket = count - prev_count;
                if in_bucket <= 0.0 {
                    return Some(*le);
                }
                return Some(prev_le + (le - prev_le) * (rank - prev_count) / in_bucket);
            }
            prev_le = *le;
            prev_count = *count;
        }
        Some(prev_le)
    }
}

/// One series from the Prometheus HTTP API's instant query.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Runs an instant query against `base` (e.g. `http://127.0.0.1:9090`).
pub fn query(base: &str, expr: &str) -> Result<Vec<Series>, http::Error> {
    let url = format!(
        "{}?query={}",
        http::join(base, "/api/v1/query"),
        http::encode(expr)
    );
    let body: serde_json::Value = http::get_json(&url)?;
    parse_query_response(&url, &body)
}

/// Decodes an instant-query response body (`resultType` vector or scalar).
pub fn parse_query_response(
    url: &str,
    body: &serde_json::Value,
) -> Result<Vec<Series>, http::Error> {
    let bad = |m: &str| http::Error::Decode {
        url: url.to_string(),
        message: m.to_string(),
    };
    if body.get("status").and_then(|s| s.as_str()) != Some("success") {
        let err = body
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("no status");
        return Err(bad(&format!("query failed: {err}")));
    }
    let data = body.get("data").ok_or_else(|| bad("no `data`"))?;
    let value_of =
        |v: &serde_json::Value| -> Option<f64> { parse_value(v.as_array()?.get(1)?.as_str()?) };
    match data.get("resultType").and_then(|t| t.as_str()) {
        Some("vector") => data
            .get("result")
            .and_then(|r| r.as_array())
            .ok_or_else(|| bad("`result` is not a list"))?
            .iter()
            .map(|item| {
                let labels = item
                    .get("metric")
                    .and_then(|m| m.as_object())
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = item
                    .get("value")
                    .and_then(value_of)
                    .ok_or_else(|| bad("a series has no numeric `value`"))?;
                Ok(Series { labels, value })
            })
            .collect(),
        Some("scalar") => {
            let value = data
                .get("result")
                .and_then(value_of)
                .ok_or_else(|| bad("scalar without a value"))?;
            Ok(vec![Series {
                labels: Vec::new(),
                value,
            }])
        }
        other => Err(bad(&format!("unsupported resultType {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_scrape_pushes_with_a_label_added_in_key_order_and_others_dropped() {
        let text = "m{b=\"1\",result=\"ok\",z=\"q\\\"x\"} 2\nbare 3\n";
        let scrape = parse_borrowed(text).unwrap();
        assert_eq!(scrape.len(), 2);
        let first = scrape.iter().next().unwrap();
        assert_eq!(first.label("z"), Some("q\"x"), "escapes undone");
        assert!(
            matches!(first.labels[0].1, Cow::Borrowed(_)),
            "plain values borrowed"
        );
        let mut m = Metrics::new();
        for s in scrape.iter() {
            s.push_to(&mut m, 9, Some(("node", "n1")), &["result"]);
        }
        type Flat<'a> = (String, Vec<(&'a str, &'a str)>, f64);
        let got: Vec<Flat> = m
            .iter()
            .map(|s| (s.name.to_owned(), s.labels.pairs().collect(), s.value))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "m".to_owned(),
                    vec![("b", "1"), ("node", "n1"), ("z", "q\"x")],
                    2.0
                ),
                ("bare".to_owned(), vec![("node", "n1")], 3.0),
            ]
        );
        assert_eq!(
            parse_borrowed("m{a=\"1\"} 1\nbad{ 2\n").err().unwrap().line,
            2
        );
    }

    #[test]
    fn parses_samples_labels_and_specials() {
        let text = r#"
# HELP reqs_total Requests.
# TYPE reqs_total counter
reqs_total{code="200",path="/a \"b\"\\c"} 1027 1395066363000
reqs_total{code="500"} 3
temp -Inf
up NaN
lat_bucket{le="+Inf"} 7
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].label("path"), Some("/a \"b\"\\c"));
        assert_eq!(s[0].value, 1027.0);
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        assert!(s[3].value.is_nan());
        assert_eq!(s[4].label("le"), Some("+Inf"));
    }

    #[test]
    fn an_added_label_goes_where_it_sorts() {
        let keys = |line: &str, extra| {
            let s = parse(line).unwrap().remove(0).into_metric_with(7, extra);
            assert_eq!(s.timestamp_ms, 7);
            s.labels
                .into_iter()
                .map(|l| format!("{}={}", l.key, l.value))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            keys("x{a=\"1\",z=\"2\"} 1", ("node", "n")),
            "a=1,node=n,z=2"
        );
        assert_eq!(keys("x{a=\"1\"} 1", ("node", "n")), "a=1,node=n");
        assert_eq!(keys("x 1", ("node", "n")), "node=n");
        // A scraped label of the same name follows the added one.
        assert_eq!(keys("x{node=\"s\"} 1", ("node", "n")), "node=n,node=s");
    }

    #[test]
    fn rejects_malformed_lines_with_line_numbers() {
        let err = parse("ok 1\nbroken{code=\"200\" 5\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = parse("x_total abc\n").unwrap_err();
        assert!(err.message.contains("bad value"), "{err}");
        assert!(parse("<html>oops</html>\n").is_err());
        for (text, says) in [
            ("x{a=\"1} 5\n", "unterminated label value"),
            ("x{a=\"1\\\"} 5\n", "unterminated label value"),
            ("x{a=\"1\\", "unterminated escape"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.message.contains(says), "{text:?}: {err}");
        }
    }

    fn hist(counts: &[(f64, f64)]) -> Histogram {
        Histogram {
            buckets: counts.to_vec(),
            sum: 0.0,
            count: counts.last().unwrap().1,
        }
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let h = hist(&[
            (0.1, 50.0),
            (0.2, 90.0),
            (0.4, 100.0),
            (f64::INFINITY, 100.0),
        ]);
        assert!((h.quantile(0.5).unwrap() - 0.1).abs() < 1e-9);
        // rank 99 lies 9/10 of the way through the (0.2, 0.4] bucket.
        assert!((h.quantile(0.99).unwrap() - 0.38).abs() < 1e-9);
        assert_eq!(
            hist(&[(1.0, 0.0), (f64::INFINITY, 0.0)]).quantile(0.9),
            None
        );
    }

    #[test]
    fn delta_subtracts_and_handles_restart() {
        let a = hist(&[(0.1, 10.0), (f64::INFINITY, 10.0)]);
        let b = hist(&[(0.1, 12.0), (f64::INFINITY, 20.0)]);
        let d = b.delta(&a);
        assert_eq!(d.buckets, vec![(0.1, 2.0), (f64::INFINITY, 10.0)]);
        assert_eq!(d.count, 10.0);
        assert_eq!(a.delta(&b), a, "a reset counter yields the later histogram");
    }

    #[test]
    fn histogram_sums_over_extra_labels() {
        let s = parse(
            "h_bucket{n=\"a\",le=\"1\"} 1\nh_bucket{n=\"b\",le=\"1\"} 2\n\
             h_bucket{n=\"a\",le=\"+Inf\"} 3\nh_bucket{n=\"b\",le=\"+Inf\"} 4\nh_count{n=\"a\"} 3\n",
        )
        .unwrap();
        let it = s
            .iter()
            .map(|x| (x.name.as_str(), x.labels.as_slice(), x.value));
        let h = Histogram::from_samples(it, "h", &[]).unwrap();
        assert_eq!(h.buckets, vec![(1.0, 3.0), (f64::INFINITY, 7.0)]);
        let it = s
            .iter()
            .map(|x| (x.name.as_str(), x.labels.as_slice(), x.value));
        let only_a = Histogram::from_samples(it, "h", &[("n", "a")]).unwrap();
        assert_eq!(only_a.buckets, vec![(1.0, 1.0), (f64::INFINITY, 3.0)]);
    }

    #[test]
    fn decodes_query_api_vectors_and_errors() {
        let body: serde_json::Value = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"instance":"a"},"value":[1700000000.1,"42"]}]}}"#,
        )
        .unwrap();
        let s = parse_query_response("u", &body).unwrap();
        assert_eq!(s[0].value, 42.0);
        assert_eq!(s[0].labels, vec![("instance".into(), "a".into())]);
        let err: serde_json::Value =
            serde_json::from_str(r#"{"status":"error","error":"parse error"}"#).unwrap();
        assert!(
            parse_query_response("u", &err)
                .unwrap_err()
                .to_string()
                .contains("parse error")
        );
    }
}
