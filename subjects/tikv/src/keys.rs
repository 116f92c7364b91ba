//! Evidence keys the invariants emit. Failure-mode signals name only these, and a test
//! checks that every evidence signal names a key some invariant really emits.

pub const STORE_ID: &str = "store_id";
pub const STORE_STATE: &str = "store_state";
pub const STATUS_UP: &str = "status_up";
pub const HEARTBEAT_AGE_S: &str = "heartbeat_age_s";
pub const MAX_STORE_DOWN_TIME_S: &str = "max_store_down_time_s";
pub const PD_ERRORS_LOGGED: &str = "pd_errors_logged";
pub const ADDRESS: &str = "address";

pub const PD_PROBLEM: &str = "pd_problem";
pub const PD_LEADER: &str = "pd_leader";
pub const PREVIOUS_PD_LEADER: &str = "previous_pd_leader";
pub const MEMBER: &str = "member";
pub const HEALTHY_MEMBERS: &str = "healthy_members";
pub const MEMBERS: &str = "members";

pub const DEGRADED_KIND: &str = "degraded_kind";
pub const MISS_PEER_REGIONS: &str = "miss_peer_regions";
pub const DOWN_PEER_REGIONS: &str = "down_peer_regions";
pub const PENDING_PEER_REGIONS: &str = "pending_peer_regions";
pub const OFFLINE_PEER_REGIONS: &str = "offline_peer_regions";
pub const SAMPLE_REGION_IDS: &str = "sample_region_ids";
pub const STORES_NOT_UP: &str = "stores_not_up";

pub const AVAILABLE_RATIO: &str = "available_ratio";
pub const AVAILABLE_BYTES: &str = "available_bytes";
pub const CAPACITY_BYTES: &str = "capacity_bytes";
pub const LOW_SPACE_STORES: &str = "low_space_stores";

pub const INSTANCE: &str = "instance";
pub const REQUEST_TYPE: &str = "request_type";
pub const P99_MS: &str = "p99_ms";
pub const THRESHOLD: &str = "threshold";
pub const SCOPE: &str = "scope";
pub const AFFECTED_STORES: &str = "affected_stores";
pub const STORES_WITH_DATA: &str = "stores_with_data";
pub const LOAD_TREND: &str = "load_trend";
pub const QPS_RATIO: &str = "qps_ratio";

pub const TRIGGER: &str = "trigger";
pub const APPEND_P99_S: &str = "append_p99_s";
pub const COMMIT_P99_S: &str = "commit_p99_s";
pub const APPLY_P99_S: &str = "apply_p99_s";
pub const LOG_LAG_P99: &str = "log_lag_p99";
pub const SLOW_SCORE: &str = "slow_score";
pub const RAFTSTORE_CPU: &str = "raftstore_cpu";

pub const HOT_KIND: &str = "hot_kind";
pub const HOT_SCOPE: &str = "hot_scope";
pub const REGION_ID: &str = "region_id";
pub const FLOW_BYTES: &str = "flow_bytes";
pub const SHARE: &str = "share";
pub const HOT_DEGREE: &str = "hot_degree";
pub const MEAN_FLOW_BYTES: &str = "mean_flow_bytes";
pub const RATIO: &str = "ratio";

pub const LEADER_COUNT: &str = "leader_count";
pub const MEAN_LEADER_COUNT: &str = "mean_leader_count";
pub const MIN_STORE_ID: &str = "min_store_id";
pub const MIN_LEADER_COUNT: &str = "min_leader_count";
pub const TO_STORE_ID: &str = "to_store_id";

pub const ELECTIONS: &str = "elections";
pub const WINDOW_S: &str = "window_s";
pub const REGIONS_AFFECTED: &str = "regions_affected";
pub const LEADER_DROP: &str = "leader_drop";

pub const SENDING_SNAPS: &str = "sending_snaps";
pub const RECEIVING_SNAPS: &str = "receiving_snaps";
pub const SNAPSHOT_EVENTS: &str = "snapshot_events";

pub const SCHEDULER_PENDING: &str = "scheduler_pending";
pub const TOO_BUSY_PER_S: &str = "too_busy_per_s";

pub const BOOTSTRAPPED: &str = "bootstrapped";
