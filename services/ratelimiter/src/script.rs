//! The sliding-window algorithm: the Lua scripts Redis runs atomically, and the same arithmetic
//! in Rust for the local fallback. Both must stay in step; `outcome` is the reference and the
//! integration tests check the Lua side against the formula.
//!
//! estimate = previous * (window - elapsed) / window + current
//! allowed  iff estimate + cost <= limit

/// Key of the persistent hash holding `{"limit":N,"window_ms":W}` per key (and `_default`).
pub const LIMITS_KEY: &str = "rl:limits";
/// Key of the persistent set of blocked keys.
pub const BLOCKED_KEY: &str = "rl:blocked";
/// Field of [`LIMITS_KEY`] holding the cluster-wide default.
pub const DEFAULT_FIELD: &str = "_default";

/// Prelude shared by all scripts: resolves the limit (key field, else `_default`, else the
/// node's default in ARGV[2..3]), reads the server clock and names the two counters.
/// KEYS[1] = rl:blocked, KEYS[2] = rl:limits, ARGV[1] = key.
const PRELUDE: &str = r#"
local key = ARGV[1]
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local function parse(raw)
  if not raw then return nil end
  local ok, t = pcall(cjson.decode, raw)
  if not ok or type(t) ~= 'table' then return nil end
  local l, w = tonumber(t['limit']), tonumber(t['window_ms'])
  if l == nil or w == nil or l < 0 or w < 1 then return nil end
  return math.floor(l), math.floor(w)
end
local cfg = redis.call('HMGET', KEYS[2], key, '_default')
local l, w = parse(cfg[1])
if l == nil then l, w = parse(cfg[2]) end
if l ~= nil then limit = l; window = w end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idx = math.floor(now / window)
local start = idx * window
local elapsed = now - start
local cur_key = 'rl:w:' .. key .. ':' .. string.format('%d', idx)
local prev_key = 'rl:w:' .. key .. ':' .. string.format('%d', idx - 1)
"#;

/// The decision. ARGV[4] = cost. Returns
/// {allowed, limit, remaining, retry_after_ms, window_ms, window_start_ms, current, previous,
///  now_ms, blocked}; `current` is after this decision's increment.
const DECIDE_BODY: &str = r#"
local cost = tonumber(ARGV[4])
local blocked = redis.call('SISMEMBER', KEYS[1], key)
local counts = redis.call('MGET', prev_key, cur_key)
local prev = tonumber(counts[1]) or 0
local cur = tonumber(counts[2]) or 0
if blocked == 1 then
  return {0, limit, 0, window, window, start, cur, prev, now, 1}
end
local estimate = prev * (window - elapsed) / window + cur
if estimate + cost <= limit then
  cur = redis.call('INCRBY', cur_key, cost)
  redis.call('PEXPIRE', cur_key, 2 * window + 1000)
  local remaining = math.floor(limit - estimate - cost)
  if remaining < 0 then remaining = 0 end
  return {1, limit, remaining, 0, window, start, cur, prev, now, 0}
end
local retry
local room = limit - cost - cur
if cost > limit then
  retry = window
elseif room >= 0 then
  retry = math.ceil(window - room * window / prev - elapsed)
else
  retry = (window - elapsed) + math.ceil(window - (limit - cost) * window / cur)
end
if retry < 1 then retry = 1 end
local remaining = math.floor(limit - estimate)
if remaining < 0 then remaining = 0 end
return {0, limit, remaining, retry, window, start, cur, prev, now, 0}
"#;

/// Read-only view. Returns {limit, window_ms, window_start_ms, now_ms, current, previous, blocked}.
const PEEK_BODY: &str = r#"
local blocked = redis.call('SISMEMBER', KEYS[1], key)
local counts = redis.call('MGET', prev_key, cur_key)
return {limit, window, start, now, tonumber(counts[2]) or 0, tonumber(counts[1]) or 0, blocked}
"#;

/// Reset: deletes the two counters that can still influence a decision (older ones are never
/// read and expire by TTL). Returns the number of keys deleted.
const RESET_BODY: &str = r#"
return redis.call('DEL', cur_key, prev_key)
"#;

pub fn decide_script() -> String {
    format!("{PRELUDE}{DECIDE_BODY}")
}
pub fn peek_script() -> String {
    format!("{PRELUDE}{PEEK_BODY}")
}
pub fn reset_script() -> String {
    format!("{PRELUDE}{RESET_BODY}")
}

/// Result of one decision, identical for the Redis and the local path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub remaining: u64,
    pub retry_after_ms: u64,
}

/// Sliding-window estimate of the count in the window ending now.
pub fn estimate(previous: u64, current: u64, window_ms: u64, elapsed_ms: u64) -> f64 {
    let w = window_ms.max(1) as f64;
    let e = elapsed_ms.min(window_ms) as f64;
    previous as f64 * (w - e) / w + current as f64
}

/// The decision rule (mirrors `DECIDE_BODY`). `current` is before this decision's increment.
///
/// retry_after_ms on denial is the earliest time at which the same request would pass if no
/// other traffic arrived: within this window once the previous window's weight has decayed
/// enough, otherwise in the next window once this window's (then previous) weight has.
/// A cost above the limit can never pass; it reports one full window.
pub fn outcome(
    limit: u64,
    window_ms: u64,
    elapsed_ms: u64,
    previous: u64,
    current: u64,
    cost: u64,
    blocked: bool,
) -> Outcome {
    let window_ms = window_ms.max(1);
    if blocked {
        return Outcome {
            allowed: false,
            remaining: 0,
            retry_after_ms: window_ms,
        };
    }
    let (l, w, e, c) = (
        limit as f64,
        window_ms as f64,
        elapsed_ms as f64,
        cost as f64,
    );
    let est = estimate(previous, current, window_ms, elapsed_ms);
    if est + c <= l {
        return Outcome {
            allowed: true,
            remaining: (l - est - c).floor().max(0.0) as u64,
            retry_after_ms: 0,
        };
    }
    let room = l - c - current as f64;
    let retry = if cost > limit {
        w
    } else if room >= 0.0 {
        (w - room * w / previous as f64 - e).ceil()
    } else {
        (w - e) + (w - (l - c) * w / current as f64).ceil()
    };
    Outcome {
        allowed: false,
        remaining: (l - est).floor().max(0.0) as u64,
        retry_after_ms: retry.max(1.0) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_key_counts_exactly() {
        let o = outcome(10, 1000, 0, 0, 9, 1, false);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        let o = outcome(10, 1000, 0, 0, 10, 1, false);
        assert!(!o.allowed);
        // Nothing decays in this window; wait for the next one, where 10 weighted by
        // (1000 - e)/1000 must drop to 9: e = 100 ms, plus the 1000 ms left here.
        assert_eq!(o.retry_after_ms, 1000 + 100);
    }

    #[test]
    fn previous_window_is_weighted_by_overlap() {
        // 100 in the previous window, 250 ms into this one: 75 still count.
        assert_eq!(estimate(100, 0, 1000, 250), 75.0);
        let o = outcome(100, 1000, 250, 100, 20, 1, false);
        assert!(o.allowed);
        assert_eq!(o.remaining, 100 - 75 - 20 - 1);
    }

    #[test]
    fn retry_after_waits_for_previous_weight_to_decay() {
        // est = 100*0.5 + 50 = 100 at e=500; need 100*(1000-e)/1000 <= 49 -> e >= 510.
        let o = outcome(100, 1000, 500, 100, 50, 1, false);
        assert!(!o.allowed);
        assert_eq!(o.retry_after_ms, 10);
        let later = outcome(100, 1000, 510, 100, 50, 1, false);
        assert!(later.allowed);
        let earlier = outcome(100, 1000, 509, 100, 50, 1, false);
        assert!(!earlier.allowed);
    }

    #[test]
    fn blocked_and_oversized_costs() {
        let o = outcome(100, 2000, 0, 0, 0, 1, true);
        assert_eq!(
            o,
            Outcome {
                allowed: false,
                remaining: 0,
                retry_after_ms: 2000
            }
        );
        let o = outcome(5, 2000, 0, 0, 0, 6, false);
        assert!(!o.allowed);
        assert_eq!(o.retry_after_ms, 2000);
        assert_eq!(o.remaining, 5);
    }
}
