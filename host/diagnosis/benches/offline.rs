//! Offline diagnosis on the rate limiter fixtures: time per incident (p50/p99), context
//! size in estimated tokens per fault, and the top-1 table.
//!
//! `cargo bench -p operator-diagnosis --bench offline`

use operator_diagnosis::context::{Context, ContextInput, DEFAULT_BUDGET_TOKENS};
use operator_diagnosis::{TicketFacts, incident, offline};
use operator_model::SubjectMetadata;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FAULTS: &[&str] = &[
    "kill_node",
    "pause_node",
    "redis_down",
    "redis_latency",
    "partition",
    "stuck_key",
    "hot_key",
    "limit_zero",
    "no_match",
];
const RUNS: usize = 200;

fn load(
    dir: &Path,
    name: &str,
) -> (
    Value,
    Vec<TicketFacts>,
    Vec<operator_diagnosis::ObservationPoint>,
) {
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    let expect = v["expect"].take();
    (
        expect,
        serde_json::from_value(v["tickets"].take()).unwrap(),
        serde_json::from_value(v["history"].take()).unwrap(),
    )
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let metadata: SubjectMetadata =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metadata.json")).unwrap()).unwrap();
    println!(
        "offline diagnosis, {RUNS} runs per fault (p50/p99: grouping + context build + reasoning; context build of ~7 observations of ~750 samples; reasoning alone)\n"
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8}  {:<6} {:<6} {:<18} {:<8} {:<5}",
        "fault",
        "p50",
        "p99",
        "build p50",
        "reason p50",
        "tokens",
        "trimmed",
        "want",
        "top-1",
        "component",
        "action",
        "conf"
    );
    let mut all = Vec::new();
    let mut right = 0;
    for name in FAULTS {
        let (expect, tickets, history) = load(&dir, name);
        let mut times = Vec::with_capacity(RUNS);
        let mut reason_times = Vec::with_capacity(RUNS);
        let mut build_times = Vec::with_capacity(RUNS);
        let mut last = None;
        for _ in 0..RUNS {
            let t = Instant::now();
            let inc = incident::group(&tickets, &history);
            let first = &inc[0];
            let input = ContextInput {
                subject: "ratelimiter".into(),
                metadata: metadata.clone(),
                tickets: tickets
                    .iter()
                    .filter(|t| first.tickets().any(|id| id == t.id))
                    .cloned()
                    .collect(),
                root: Some(first.root),
                history: history.clone(),
            };
            let b = Instant::now();
            let ctx = Context::build(input, DEFAULT_BUDGET_TOKENS);
            build_times.push(b.elapsed());
            let r = Instant::now();
            let d = offline::diagnose(&ctx).expect("validates");
            reason_times.push(r.elapsed());
            times.push(t.elapsed());
            last = Some((ctx, d));
        }
        times.sort();
        reason_times.sort();
        build_times.sort();
        all.extend(times.iter().copied());
        let (ctx, d) = last.unwrap();
        let want = expect["failure_mode"].as_str().unwrap_or("?");
        if d.root_cause.failure_mode == want {
            right += 1;
        }
        let (tc, te) = ctx.trimmed();
        println!(
            "{:<14} {:>9.2?} {:>9.2?} {:>9.2?} {:>9.2?} {:>7} {:>8}  {:<6} {:<6} {:<18} {:<8} {:<5.2}",
            name,
            pct(&times, 0.5),
            pct(&times, 0.99),
            pct(&build_times, 0.5),
            pct(&reason_times, 0.5),
            ctx.estimated_tokens(),
            tc + te,
            want,
            d.root_cause.failure_mode,
            d.root_cause.component,
            d.recommended_action.action,
            d.confidence
        );
    }
    all.sort();
    println!(
        "\nall incidents: p50 {:.2?}, p99 {:.2?} per incident; top-1 {right}/{} faults right",
        pct(&all, 0.5),
        pct(&all, 0.99),
        FAULTS.len()
    );
}
