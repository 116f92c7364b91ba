//! TIKV-ACT-01..06 through PD: operators (`POST /pd/api/v1/operators`), the evict-leader
//! scheduler (`/pd/api/v1/schedulers`), and the operator status read.

use crate::metadata::{self as m};
use crate::pd::{self, Client, PdError};
use crate::settings::Settings;
use crate::transport::{Method, Transport};
use operator_sdk::{ActionError, Kv};
use serde_json::{Value, json};

fn param<'a>(params: &'a [Kv], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|p| p.key == name)
        .map(|p| p.value.trim())
        .filter(|v| !v.is_empty())
}

fn id(params: &[Kv], name: &str) -> Result<u64, ActionError> {
    let v = param(params, name)
        .ok_or_else(|| ActionError::BadParams(format!("missing parameter `{name}`")))?;
    v.parse().map_err(|_| {
        ActionError::BadParams(format!(
            "parameter `{name}` must be a whole number, got `{v}`"
        ))
    })
}

/// The request body of each PD write, by action id (pure, so it is tested).
pub fn request(
    action: &str,
    params: &[Kv],
) -> Result<(Method, String, Option<Value>), ActionError> {
    Ok(match action {
        m::TRANSFER_LEADER => (
            Method::Post,
            "/operators".into(),
            Some(
                json!({"name": "transfer-leader", "region_id": id(params, "region_id")?, "to_store_id": id(params, "to_store_id")?}),
            ),
        ),
        m::SPLIT_REGION => {
            let policy = param(params, "policy").unwrap_or("approximate");
            if !matches!(policy, "approximate" | "scan" | "usekey") {
                return Err(ActionError::BadParams(format!(
                    "policy must be approximate, scan or usekey, got `{policy}`"
                )));
            }
            let mut body = json!({"name": "split-region", "region_id": id(params, "region_id")?, "policy": policy});
            if policy == "usekey" {
                let keys: Vec<&str> = param(params, "keys")
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .collect();
                if keys.is_empty() {
                    return Err(ActionError::BadParams(
                        "policy usekey needs `keys` (hex, comma-separated)".into(),
                    ));
                }
                body["keys"] = json!(keys);
            }
            (Method::Post, "/operators".into(), Some(body))
        }
        m::SCATTER_REGION => (
            Method::Post,
            "/operators".into(),
            Some(json!({"name": "scatter-region", "region_id": id(params, "region_id")?})),
        ),
        m::EVICT_LEADER => (
            Method::Post,
            "/schedulers".into(),
            Some(json!({"name": "evict-leader-scheduler", "store_id": id(params, "store_id")?})),
        ),
        m::REMOVE_EVICT_LEADER => (
            Method::Delete,
            format!(
                "/schedulers/evict-leader-scheduler-{}",
                id(params, "store_id")?
            ),
            None,
        ),
        m::OPERATOR_STATUS => (
            Method::Get,
            format!("/operators/{}", id(params, "region_id")?),
            None,
        ),
        other => return Err(ActionError::UnknownAction(other.into())),
    })
}

/// PD's answer to a write: a JSON string ("The operator is created.") or an error string.
fn answer(reply: &crate::transport::Reply) -> Result<String, ActionError> {
    let (code, message) = pd::error_body(&reply.body);
    if (200..300).contains(&reply.status) {
        Ok(message)
    } else {
        Err(ActionError::Failed(match code {
            Some(c) => format!("PD answered HTTP {}: [{c}] {message}", reply.status),
            None => format!("PD answered HTTP {}: {message}", reply.status),
        }))
    }
}

fn operator_status(pd: &Client, region: u64) -> String {
    match pd.get(&format!("/operators/{region}")) {
        Ok(r) if (200..300).contains(&r.status) => {
            let body = r.body.trim_ascii();
            if body == b"null" {
                return format!("region {region}: no operator running");
            }
            match serde_json::from_slice::<pd::OperatorStatus>(body) {
                Ok(op) => format!(
                    "region {region}: operator {} status {}",
                    op.desc.unwrap_or_else(|| "(no description)".into()),
                    op.status.map_or("unknown".to_string(), |s| s
                        .as_str()
                        .map_or(s.to_string(), String::from))
                ),
                Err(_) => format!(
                    "region {region}: {}",
                    String::from_utf8_lossy(body)
                        .chars()
                        .take(300)
                        .collect::<String>()
                ),
            }
        }
        Ok(r) => {
            let (_, msg) = pd::error_body(&r.body);
            format!("region {region}: no operator ({msg})")
        }
        Err(e) => format!("region {region}: operator status unreadable: {e}"),
    }
}

pub fn execute(
    t: &dyn Transport,
    s: &Settings,
    action: &str,
    params: &[Kv],
) -> Result<String, ActionError> {
    let actions = m::actions();
    let id = actions
        .iter()
        .find(|a| a.id == action || a.name == action)
        .map(|a| a.id.clone())
        .ok_or_else(|| ActionError::UnknownAction(action.into()))?;
    let (method, path, body) = request(&id, params)?;
    let pd = Client::new(t, &s.pd);
    if id == m::OPERATOR_STATUS {
        return Ok(operator_status(&pd, self::id(params, "region_id")?));
    }
    // An operator on a region PD does not know fails late and vaguely; ask first. PD says
    // "no such region" with 404 (newer) or 200 `null` (v7.5).
    if path == "/operators" {
        let region = self::id(params, "region_id")?;
        match pd
            .get(&format!("/region/id/{region}"))
            .and_then(|r| pd::decode::<serde_json::Value>(&r))
        {
            Ok(_) => {}
            Err(PdError::NotFound(m)) => {
                return Err(ActionError::BadParams(format!(
                    "region {region} does not exist ({m})"
                )));
            }
            Err(e) => {
                return Err(ActionError::Failed(format!(
                    "looking up region {region}: {e}"
                )));
            }
        }
    }
    let bytes = body.map(|b| b.to_string().into_bytes());
    let reply = pd
        .send(method, &path, bytes)
        .map_err(|e: PdError| ActionError::Failed(e.to_string()))?;
    let said = answer(&reply)?;
    // Operators run asynchronously: report where the new one stands right away.
    if path == "/operators" {
        let region = self::id(params, "region_id")?;
        return Ok(format!("{said} {}", operator_status(&pd, region)));
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;
    use operator_sdk::kv;

    #[test]
    fn bodies_in_pd_shapes() {
        let (m, p, b) = request(
            m::TRANSFER_LEADER,
            &[kv("region_id", "42"), kv("to_store_id", "4")],
        )
        .unwrap();
        assert_eq!((m, p.as_str()), (Method::Post, "/operators"));
        assert_eq!(
            b.unwrap(),
            json!({"name":"transfer-leader","region_id":42,"to_store_id":4})
        );
        let (_, _, b) = request(m::SPLIT_REGION, &[kv("region_id", "42")]).unwrap();
        assert_eq!(
            b.unwrap(),
            json!({"name":"split-region","region_id":42,"policy":"approximate"})
        );
        let (_, _, b) = request(
            m::SPLIT_REGION,
            &[
                kv("region_id", "42"),
                kv("policy", "usekey"),
                kv("keys", "7480,7490"),
            ],
        )
        .unwrap();
        assert_eq!(b.unwrap()["keys"], json!(["7480", "7490"]));
        let (_, p, b) = request(m::EVICT_LEADER, &[kv("store_id", "2")]).unwrap();
        assert_eq!(p, "/schedulers");
        assert_eq!(
            b.unwrap(),
            json!({"name":"evict-leader-scheduler","store_id":2})
        );
        let (m, p, _) = request(m::REMOVE_EVICT_LEADER, &[kv("store_id", "2")]).unwrap();
        assert_eq!(
            (m, p.as_str()),
            (Method::Delete, "/schedulers/evict-leader-scheduler-2")
        );
        assert!(matches!(
            request(m::TRANSFER_LEADER, &[kv("region_id", "x")]),
            Err(ActionError::BadParams(_))
        ));
        assert!(matches!(
            request(
                m::SPLIT_REGION,
                &[kv("region_id", "1"), kv("policy", "usekey")]
            ),
            Err(ActionError::BadParams(_))
        ));
        assert!(matches!(
            request("nope", &[]),
            Err(ActionError::UnknownAction(_))
        ));
    }

    type Writes = Vec<(Method, String, String)>;

    fn run(action: &str, params: &[Kv]) -> (Result<String, ActionError>, Writes) {
        let f = crate::fixture::Fixture::scenario("healthy");
        let s = Settings::from_pairs([("pd", "http://pd1:2379")]).unwrap();
        let r = execute(&f, &s, action, params);
        (r, f.writes.into_inner())
    }

    #[test]
    fn operators_are_posted_and_their_status_reported() {
        let (r, writes) = run(
            "transfer-leader",
            &[kv("region_id", "8"), kv("to_store_id", "4")],
        );
        assert_eq!(
            r.unwrap(),
            "The operator is created. region 8: operator transfer-leader status RUNNING"
        );
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].1, "/pd/api/v1/operators");
        assert_eq!(
            serde_json::from_str::<Value>(&writes[0].2).unwrap(),
            json!({"name":"transfer-leader","region_id":8,"to_store_id":4})
        );
        let (r, writes) = run(m::EVICT_LEADER, &[kv("store_id", "4")]);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(writes[0].1, "/pd/api/v1/schedulers");
        let (r, writes) = run("operator-status", &[kv("region_id", "8")]);
        assert_eq!(
            r.unwrap(),
            "region 8: operator transfer-leader status RUNNING"
        );
        assert!(writes.is_empty(), "a status read writes nothing");
    }

    #[test]
    fn a_missing_region_is_refused_before_any_write_in_both_pd_dialects() {
        for region in ["998", "999"] {
            let (r, writes) = run("split-region", &[kv("region_id", region)]);
            match r {
                Err(ActionError::BadParams(m)) => assert!(
                    m.starts_with(&format!("region {region} does not exist")),
                    "{m}"
                ),
                other => panic!("{region}: {other:?}"),
            }
            assert!(writes.is_empty());
        }
    }

    #[test]
    fn every_writing_action_is_declared_mutating() {
        for a in m::actions() {
            let (method, _, _) = match request(
                &a.id,
                &[
                    kv("region_id", "1"),
                    kv("to_store_id", "2"),
                    kv("store_id", "3"),
                ],
            ) {
                Ok(r) => r,
                Err(e) => panic!("{}: {e:?}", a.id),
            };
            assert_eq!(a.mutates, method != Method::Get, "{}", a.id);
        }
    }
}
