//! What the subject declares: invariants (from the table), actions, and the failure modes
//! the diagnosis weighs, with signals that tell the modes apart.

use crate::invariants::{self as inv, INVARIANTS};
use crate::keys as k;
use operator_sdk::{
    ActionInfo, FailureMode, InvariantInfo, Kv, Metadata, ParamInfo, Risk, Signal, SignalCheck, kv,
};

pub const TRANSFER_LEADER: &str = "TIKV-ACT-01";
pub const SPLIT_REGION: &str = "TIKV-ACT-02";
pub const SCATTER_REGION: &str = "TIKV-ACT-03";
pub const EVICT_LEADER: &str = "TIKV-ACT-04";
pub const REMOVE_EVICT_LEADER: &str = "TIKV-ACT-05";
pub const OPERATOR_STATUS: &str = "TIKV-ACT-06";

fn param(name: &str, description: &str, required: bool) -> ParamInfo {
    ParamInfo {
        name: name.into(),
        description: description.into(),
        required,
    }
}

fn action(
    id: &str,
    name: &str,
    description: &str,
    params: Vec<ParamInfo>,
    mutates: bool,
    risk: Risk,
) -> ActionInfo {
    ActionInfo {
        id: id.into(),
        name: name.into(),
        description: description.into(),
        params,
        mutates,
        risk,
    }
}

pub fn actions() -> Vec<ActionInfo> {
    vec![
        action(
            TRANSFER_LEADER,
            "transfer-leader",
            "Move a region's leader to another store (POST /pd/api/v1/operators, transfer-leader)",
            vec![
                param("region_id", "the region", true),
                param("to_store_id", "the store that should lead it", true),
            ],
            true,
            Risk::Low,
        ),
        action(
            SPLIT_REGION,
            "split-region",
            "Split a region in two (POST /pd/api/v1/operators, split-region; policy approximate, scan or usekey)",
            vec![
                param("region_id", "the region", true),
                param("policy", "approximate (default), scan, or usekey", false),
                param(
                    "keys",
                    "hex split keys, comma-separated (usekey only)",
                    false,
                ),
            ],
            true,
            Risk::Low,
        ),
        action(
            SCATTER_REGION,
            "scatter-region",
            "Spread a region's peers and leader over the stores (POST /pd/api/v1/operators, scatter-region)",
            vec![param("region_id", "the region", true)],
            true,
            Risk::Medium,
        ),
        action(
            EVICT_LEADER,
            "evict-leader",
            "Move every leader off a store and keep them off (POST /pd/api/v1/schedulers, evict-leader-scheduler)",
            vec![param("store_id", "the store", true)],
            true,
            Risk::Medium,
        ),
        action(
            REMOVE_EVICT_LEADER,
            "remove-evict-leader",
            "Let a store hold leaders again (DELETE /pd/api/v1/schedulers/evict-leader-scheduler-{store_id})",
            vec![param("store_id", "the store", true)],
            true,
            Risk::Low,
        ),
        action(
            OPERATOR_STATUS,
            "operator-status",
            "Report the operator PD runs on a region, if any (GET /pd/api/v1/operators/{region_id})",
            vec![param("region_id", "the region", true)],
            false,
            Risk::Low,
        ),
    ]
}

fn sig(description: &str, check: SignalCheck, weight: f32) -> Signal {
    Signal {
        description: description.into(),
        check,
        weight,
    }
}

fn on(id: &str) -> SignalCheck {
    SignalCheck::Invariant(id.into())
}

fn ev(key: &str, value: &str) -> SignalCheck {
    SignalCheck::Evidence(kv(key, value))
}

fn state(kind: &str, state: &str) -> SignalCheck {
    SignalCheck::ComponentState(kv(kind, state))
}

fn text(t: &str) -> SignalCheck {
    SignalCheck::Event(t.into())
}

struct Mode {
    id: &'static str,
    name: &'static str,
    description: &'static str,
    signals_for: Vec<Signal>,
    signals_against: Vec<Signal>,
    action: Option<&'static str>,
    params: Vec<Kv>,
}

impl From<Mode> for FailureMode {
    fn from(m: Mode) -> FailureMode {
        FailureMode {
            id: m.id.into(),
            name: m.name.into(),
            description: m.description.into(),
            signals_for: m.signals_for,
            signals_against: m.signals_against,
            suggested_action: m.action.map(String::from),
            suggested_params: m.params,
        }
    }
}

pub fn failure_modes() -> Vec<FailureMode> {
    let modes = vec![
        Mode {
            id: "TIKV-FM-01",
            name: "store crashed",
            description: "A TiKV process is gone: its status address stops answering scrapes at once, PD marks it Disconnected after 20 s and Down after max-store-down-time, and then re-replicates its regions. Restart the store; if it stays Down, PD heals replication on its own.",
            signals_for: vec![
                sig("a store is not Up", on(inv::STORE_NOT_UP), 0.3),
                sig(
                    "its status address does not answer scrapes",
                    ev(k::STATUS_UP, "false"),
                    0.4,
                ),
                sig(
                    "the store component is down (PD state and scrape agree)",
                    state("tikv", "down"),
                    0.2,
                ),
                sig("PD already counts it Down", ev(k::STORE_STATE, "Down"), 0.1),
                sig(
                    "its regions lost a peer",
                    ev(k::DEGRADED_KIND, "down-peer"),
                    0.1,
                ),
            ],
            signals_against: vec![
                sig(
                    "the process still answers scrapes",
                    ev(k::STATUS_UP, "true"),
                    0.6,
                ),
                sig(
                    "its own log shows it failing to reach PD (alive, cut off)",
                    ev(k::PD_ERRORS_LOGGED, "true"),
                    0.4,
                ),
            ],
            action: None,
            params: vec![],
        },
        Mode {
            id: "TIKV-FM-02",
            name: "store network-isolated",
            description: "The TiKV process is alive but cut off from PD (and usually its peers): heartbeats stop, PD marks it Disconnected, its log fills with heartbeat and PD connection failures, yet it still answers on its status address. Fix the network path; do not restart a healthy process.",
            signals_for: vec![
                sig("a store is not Up", on(inv::STORE_NOT_UP), 0.3),
                sig(
                    "the process still answers scrapes",
                    ev(k::STATUS_UP, "true"),
                    0.4,
                ),
                sig(
                    "its own log shows heartbeat / PD connection failures",
                    ev(k::PD_ERRORS_LOGGED, "true"),
                    0.4,
                ),
                sig(
                    "a log says the store heartbeat failed",
                    text("store heartbeat failed"),
                    0.1,
                ),
            ],
            signals_against: vec![
                sig(
                    "its status address does not answer either",
                    ev(k::STATUS_UP, "false"),
                    0.3,
                ),
                sig(
                    "its log shows no PD trouble",
                    ev(k::PD_ERRORS_LOGGED, "false"),
                    0.3,
                ),
            ],
            action: None,
            params: vec![],
        },
        Mode {
            id: "TIKV-FM-03",
            name: "disk pressure",
            description: "A store runs out of disk: below 20% available PD stops moving regions onto it, and near full TiKV refuses writes. Add capacity, remove data, or move regions away.",
            signals_for: vec![sig(
                "a store has little space available",
                on(inv::LOW_SPACE),
                0.9,
            )],
            signals_against: vec![sig(
                "the store is not Up at all",
                on(inv::STORE_NOT_UP),
                0.2,
            )],
            action: None,
            params: vec![],
        },
        Mode {
            id: "TIKV-FM-04",
            name: "hot write region",
            description: "One region takes most of the cluster's write flow (a sequential key, a counter row): its leader's store is saturated while the others idle. Split the region so PD can spread the halves.",
            signals_for: vec![
                sig("a hotspot is flagged", on(inv::HOTSPOT), 0.3),
                sig(
                    "the hotspot is a single region",
                    ev(k::HOT_SCOPE, "region"),
                    0.3,
                ),
                sig("the hot flow is writes", ev(k::HOT_KIND, "write"), 0.4),
            ],
            signals_against: vec![sig("the hot flow is reads", ev(k::HOT_KIND, "read"), 0.3)],
            action: Some(SPLIT_REGION),
            params: vec![kv("region_id", "{region_id}"), kv("policy", "approximate")],
        },
        Mode {
            id: "TIKV-FM-05",
            name: "hot read region",
            description: "One region serves most of the cluster's reads: its leader's store is saturated. Split it, then scatter the halves (or enable follower read).",
            signals_for: vec![
                sig("a hotspot is flagged", on(inv::HOTSPOT), 0.3),
                sig(
                    "the hotspot is a single region",
                    ev(k::HOT_SCOPE, "region"),
                    0.3,
                ),
                sig("the hot flow is reads", ev(k::HOT_KIND, "read"), 0.4),
            ],
            signals_against: vec![sig("the hot flow is writes", ev(k::HOT_KIND, "write"), 0.3)],
            action: Some(SPLIT_REGION),
            params: vec![kv("region_id", "{region_id}"), kv("policy", "approximate")],
        },
        Mode {
            id: "TIKV-FM-06",
            name: "slow store",
            description: "One store is slow while the rest are fine (a failing disk, a noisy neighbour, a throttled volume): its Raft log append/apply and request p99 rise alone. Move leaders off it while the cause is found.",
            signals_for: vec![
                sig("request p99 is high", on(inv::HIGH_LATENCY), 0.2),
                sig("Raft is slow", on(inv::RAFT_SLOW), 0.2),
                sig(
                    "only one store is affected",
                    ev(k::SCOPE, "single-store"),
                    0.5,
                ),
                sig(
                    "Raft log append is the slow step (disk)",
                    ev(k::TRIGGER, "append"),
                    0.2,
                ),
            ],
            signals_against: vec![
                sig(
                    "every store is slow alike",
                    ev(k::SCOPE, "cluster-wide"),
                    0.6,
                ),
                sig("the load is rising", ev(k::LOAD_TREND, "rising"), 0.3),
                sig("the store is not Up", on(inv::STORE_NOT_UP), 0.3),
            ],
            action: Some(EVICT_LEADER),
            params: vec![kv("store_id", "{store_id}")],
        },
        Mode {
            id: "TIKV-FM-07",
            name: "leader imbalance",
            description: "Leaders gather on one store (a scheduler disabled, leader weights or labels misconfigured, an evict-leader left behind): that store serves most requests. Let PD rebalance; move leaders by hand if it will not.",
            signals_for: vec![sig(
                "one Up store holds far more leaders than the mean",
                on(inv::LEADER_IMBALANCE),
                0.9,
            )],
            signals_against: vec![
                sig(
                    "a store is not Up (leaders moved for a reason)",
                    on(inv::STORE_NOT_UP),
                    0.5,
                ),
                sig(
                    "one region dominates the traffic instead",
                    on(inv::HOTSPOT),
                    0.2,
                ),
            ],
            action: None,
            params: vec![],
        },
        Mode {
            id: "TIKV-FM-08",
            name: "PD leader loss",
            description: "The PD leader died or lost its etcd lease: no leader (or a new one) until the election settles; TSO and scheduling pause meanwhile. Bring the old leader back or make sure a quorum is healthy.",
            signals_for: vec![
                sig("PD has no leader", ev(k::PD_PROBLEM, "no-leader"), 0.6),
                sig(
                    "the PD leader changed",
                    ev(k::PD_PROBLEM, "leader-changed"),
                    0.5,
                ),
                sig("PD is unhealthy", on(inv::PD_UNHEALTHY), 0.2),
            ],
            signals_against: vec![],
            action: None,
            params: vec![],
        },
        Mode {
            id: "TIKV-FM-09",
            name: "PD member down",
            description: "A PD follower is unhealthy while a leader serves: the cluster works, but one more failure loses the quorum. Restart or replace the member.",
            signals_for: vec![
                sig(
                    "a PD member is unhealthy",
                    ev(k::PD_PROBLEM, "member-unhealthy"),
                    0.7,
                ),
                sig("PD is unhealthy", on(inv::PD_UNHEALTHY), 0.2),
            ],
            signals_against: vec![
                sig("PD has no leader", ev(k::PD_PROBLEM, "no-leader"), 0.5),
                sig(
                    "the leader moved: the member that went down led",
                    ev(k::PD_PROBLEM, "leader-changed"),
                    0.5,
                ),
            ],
            action: None,
            params: vec![],
        },
        Mode {
            id: "TIKV-FM-10",
            name: "snapshot storm after recovery",
            description: "A store came back (or joined) far behind: many regions catch up by snapshot at once, so pending peers pile up and disks and network saturate. It settles on its own; throttle snapshot limits if it hurts foreground traffic.",
            signals_for: vec![
                sig(
                    "snapshots are flowing in bulk",
                    on(inv::SNAPSHOT_STORM),
                    0.5,
                ),
                sig(
                    "many peers are pending",
                    ev(k::DEGRADED_KIND, "pending-peer"),
                    0.3,
                ),
                sig(
                    "logs show snapshots being applied",
                    text("apply snapshot"),
                    0.2,
                ),
            ],
            signals_against: vec![
                sig(
                    "a store is still unreachable",
                    ev(k::STATUS_UP, "false"),
                    0.4,
                ),
                sig("PD counts a store Down", ev(k::STORE_STATE, "Down"), 0.3),
            ],
            action: None,
            params: vec![],
        },
        Mode {
            id: "TIKV-FM-11",
            name: "cluster-wide slowness from load",
            description: "Every store is slower at once while no store is faulty: the offered load rose (a batch job, a traffic spike) and the scheduler queues up. Nothing in TiKV is broken; shed or shape load, or add stores. Ambiguous by nature: confirm with the client side before acting.",
            signals_for: vec![
                sig("request p99 is high", on(inv::HIGH_LATENCY), 0.2),
                sig(
                    "every store is slow alike",
                    ev(k::SCOPE, "cluster-wide"),
                    0.4,
                ),
                sig("the load is rising", ev(k::LOAD_TREND, "rising"), 0.3),
                sig("the scheduler is queueing", on(inv::SCHEDULER_BUSY), 0.2),
            ],
            signals_against: vec![
                sig("only one store is slow", ev(k::SCOPE, "single-store"), 0.6),
                sig("a store is not Up", on(inv::STORE_NOT_UP), 0.4),
                sig("a store is out of space", on(inv::LOW_SPACE), 0.3),
                sig("one region dominates the traffic", on(inv::HOTSPOT), 0.3),
            ],
            action: None,
            params: vec![],
        },
        Mode {
            id: "TIKV-FM-12",
            name: "leader churn",
            description: "Region leaders keep changing without a store going away (an unstable network, a raftstore thread too busy to send heartbeats in time): elections repeat and requests retry. Look at raftstore CPU and network loss.",
            signals_for: vec![
                sig("many leader elections", on(inv::LEADER_CHURN), 0.6),
                sig("logs show leaders elected", text("became leader"), 0.2),
                sig(
                    "elections counted from the logs",
                    ev(k::TRIGGER, "log-elections"),
                    0.2,
                ),
            ],
            signals_against: vec![
                sig(
                    "a store is down: its leaders had to move",
                    on(inv::STORE_NOT_UP),
                    0.6,
                ),
                sig(
                    "PD moves leaders on purpose (imbalance being fixed)",
                    on(inv::LEADER_IMBALANCE),
                    0.2,
                ),
            ],
            action: None,
            params: vec![],
        },
        Mode {
            id: "TIKV-FM-13",
            name: "cluster not bootstrapped",
            description: "PD is up but no TiKV has joined: every cluster route answers ErrNotBootstrapped. Start the TiKV stores with --pd-endpoints pointing at this PD.",
            signals_for: vec![sig(
                "PD says not bootstrapped",
                on(inv::NOT_BOOTSTRAPPED),
                1.0,
            )],
            signals_against: vec![],
            action: None,
            params: vec![],
        },
    ];
    modes.into_iter().map(FailureMode::from).collect()
}

pub fn metadata() -> Metadata {
    Metadata {
        name: "tikv".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description: "TiKV cluster through PD's HTTP API, Prometheus and the stores' logs \
                      (settings: pd=http://pd:2379[,...] prometheus=http://prom:9090 log.<store-N>=file:/path)"
            .into(),
        settings: crate::settings::declared(),
        invariants: INVARIANTS
            .iter()
            .map(|i| InvariantInfo { id: i.id.into(), name: i.name.into(), description: i.description.into(), severity: i.severity })
            .collect(),
        actions: actions(),
        failure_modes: failure_modes(),
    }
}
