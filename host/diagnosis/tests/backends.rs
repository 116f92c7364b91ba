//! Claude and OpenAI-compatible backends against local stub servers speaking each wire
//! format, and prompt injection through cluster data.

mod common;
#[path = "common/stub.rs"]
mod stub;

use operator_diagnosis::backend::tools::SUBMIT;
use operator_diagnosis::context::{Context, DATA_CLOSE, DATA_OPEN, DEFAULT_BUDGET_TOKENS};
use operator_diagnosis::{
    Backend, ClaudeConfig, DiagnoseError, OpenAiConfig, RetryPolicy, offline,
};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use stub::{Reply, Stub};

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| Context::build(common::load("partition").input(), DEFAULT_BUDGET_TOKENS))
}

fn good_answer(ctx: &Context) -> Value {
    serde_json::to_value(offline::answer(ctx)).unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}

// ------------------------------------------------------------------ Claude wire format

const KEY: &str = "sk-ant-test-0123456789";

fn claude(stub: &Stub) -> Backend {
    let mut c = ClaudeConfig::with_key(KEY);
    c.base_url = stub.url();
    c.retry = fast_retry();
    c.timeout = Duration::from_secs(5);
    Backend::Claude(c)
}

fn message(content: Value, stop: &str) -> Value {
    json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
           "content": content, "stop_reason": stop, "stop_sequence": null,
           "usage": {"input_tokens": 1000, "output_tokens": 50,
                     "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2000}})
}

fn tool_use(id: &str, name: &str, input: Value) -> Value {
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

fn submit_reply(answer: Value) -> Reply {
    Reply::json(
        200,
        message(json!([tool_use("toolu_9", SUBMIT, answer)]), "tool_use"),
    )
}

fn overloaded() -> Reply {
    Reply::json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
}

#[tokio::test]
async fn claude_multi_step_tool_use_round_trip() {
    let ctx = ctx();
    let first = json!([
        {"type": "text", "text": "Let me look."},
        tool_use("toolu_1", "read_observation", json!({})),
        tool_use("toolu_2", "offline_ranking", json!({}))
    ]);
    let stub = Stub::start(vec![
        Reply::json(200, message(first.clone(), "tool_use")),
        Reply::json(200, message(json!([tool_use("toolu_3", "metric_history", json!({"name": "ratelimiter_decisions_total", "labels": {"node": "127.0.0.1:7002"}}))]), "tool_use")),
        submit_reply(good_answer(ctx)),
    ])
    .await;
    let d = claude(&stub).diagnose(ctx).await.expect("diagnosis");
    assert_eq!(d.backend, "claude");
    assert_eq!(d.model, "claude-sonnet-4-5");
    assert_eq!(d.root_cause.failure_mode, "FM-04");
    assert_eq!(d.tokens_in, 9000);
    assert_eq!(d.tokens_out, 150);

    let reqs = stub.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.header("x-api-key"), Some(KEY));
        assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body["model"], "claude-sonnet-4-5");
        assert!(r.body["max_tokens"].as_u64().unwrap() > 0);
        // The static prefix is cached: the metadata block, after the system text.
        let system = r.body["system"].as_array().unwrap();
        assert_eq!(
            system.last().unwrap()["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert!(
            system.last().unwrap()["text"]
                .as_str()
                .unwrap()
                .contains("FM-04")
        );
        let tools = r.body["tools"].as_array().unwrap();
        let submit = tools.iter().find(|t| t["name"] == SUBMIT).unwrap();
        assert_eq!(submit["input_schema"]["type"], "object");
        for t in tools {
            assert!(
                t["name"].is_string()
                    && t["description"].is_string()
                    && t["input_schema"].is_object()
            );
        }
    }
    // Step 2 carries the assistant turn back verbatim, then one tool_result per tool_use.
    let m = reqs[1].body["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[1]["role"], "assistant");
    assert_eq!(m[1]["content"], first);
    assert_eq!(m[2]["role"], "user");
    let results = m[2]["content"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["type"], "tool_result");
    assert_eq!(results[0]["tool_use_id"], "toolu_1");
    assert_eq!(results[1]["tool_use_id"], "toolu_2");
    let obs = results[0]["content"].as_str().unwrap();
    assert!(
        obs.starts_with(DATA_OPEN) && obs.trim_end().ends_with(DATA_CLOSE),
        "{obs}"
    );
    assert!(results[1]["content"].as_str().unwrap().contains("FM-04"));
    let m3 = reqs[2].body["messages"].as_array().unwrap();
    assert_eq!(m3.len(), 5);
    let hist = m3[4]["content"][0]["content"].as_str().unwrap();
    assert!(hist.contains("rate:ratelimiter_decisions_total"), "{hist}");
}

#[tokio::test]
async fn claude_429_honours_retry_after() {
    let stub = Stub::start(vec![
        Reply::json(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
        )
        .header("retry-after", "1"),
        submit_reply(good_answer(ctx())),
    ])
    .await;
    let t = Instant::now();
    claude(&stub)
        .diagnose(ctx())
        .await
        .expect("diagnosis after the wait");
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        t.elapsed()
    );
    assert_eq!(stub.requests().len(), 2);
}

#[tokio::test]
async fn claude_429_without_retries_left_reports_the_delay() {
    let stub = Stub::start(vec![
        Reply::json(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
        )
        .header("retry-after", "30"),
    ])
    .await;
    let Backend::Claude(mut c) = claude(&stub) else {
        unreachable!()
    };
    c.retry.max_retries = 0;
    let e = Backend::Claude(c).diagnose(ctx()).await.unwrap_err();
    assert!(
        matches!(e, DiagnoseError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(30)),
        "{e:?}"
    );
    assert!(e.is_transient());
}

#[tokio::test]
async fn claude_529_then_success() {
    let stub = Stub::start(vec![
        overloaded(),
        overloaded(),
        submit_reply(good_answer(ctx())),
    ])
    .await;
    let d = claude(&stub)
        .diagnose(ctx())
        .await
        .expect("third attempt succeeds");
    assert_eq!(d.root_cause.failure_mode, "FM-04");
    assert_eq!(stub.requests().len(), 3);
}

#[tokio::test]
async fn claude_500_is_a_server_error_after_retries() {
    let err = || {
        Reply::json(
            500,
            json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}),
        )
    };
    let stub = Stub::start(vec![err(), err(), err()]).await;
    let e = claude(&stub).diagnose(ctx()).await.unwrap_err();
    assert!(
        matches!(&e, DiagnoseError::Server { status: 500, message } if message == "boom"),
        "{e:?}"
    );
    assert_eq!(stub.requests().len(), 3, "first try and two retries");
}

#[tokio::test]
async fn claude_timeout() {
    let stub = Stub::start(vec![
        submit_reply(good_answer(ctx())).delayed(Duration::from_secs(3)),
    ])
    .await;
    let Backend::Claude(mut c) = claude(&stub) else {
        unreachable!()
    };
    c.timeout = Duration::from_millis(300);
    let e = Backend::Claude(c).diagnose(ctx()).await.unwrap_err();
    assert!(matches!(e, DiagnoseError::Timeout(_)), "{e:?}");
}

#[tokio::test]
async fn claude_unreachable() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let mut c = ClaudeConfig::with_key(KEY);
    c.base_url = format!("http://{addr}");
    let e = Backend::Claude(c).diagnose(ctx()).await.unwrap_err();
    assert!(matches!(e, DiagnoseError::Unreachable(_)), "{e:?}");
}

#[tokio::test]
async fn claude_malformed_final_answer() {
    let half = || submit_reply(json!({"summary": "half an answer"}));
    let stub = Stub::start(vec![half(), half()]).await;
    let e = claude(&stub).diagnose(ctx()).await.unwrap_err();
    match e {
        DiagnoseError::Malformed { raw, .. } => assert!(raw.contains("half an answer")),
        other => panic!("{other:?}"),
    }
    // The first one went back to the model as a tool error, once.
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 2);
    let back = reqs[1].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(back["content"][0]["type"], "tool_result");
    assert_eq!(back["content"][0]["tool_use_id"], "toolu_9");
    assert_eq!(back["content"][0]["is_error"], true);
    assert!(
        back["content"][0]["content"]
            .as_str()
            .unwrap()
            .contains("malformed")
    );
}

#[tokio::test]
async fn claude_corrects_a_rejected_answer_once() {
    let mut bad = good_answer(ctx());
    bad["evidence"][0]["reference"] = json!("ticket:31.evidence.invented");
    let stub = Stub::start(vec![submit_reply(bad), submit_reply(good_answer(ctx()))]).await;
    let d = claude(&stub)
        .diagnose(ctx())
        .await
        .expect("second answer validates");
    assert_eq!(d.root_cause.failure_mode, "FM-04");
    let reqs = stub.requests();
    let back = reqs[1].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        back["content"][0]["content"]
            .as_str()
            .unwrap()
            .contains("ticket:31.evidence.invented")
    );
}

#[tokio::test]
async fn claude_refusal_and_max_tokens() {
    let stub = Stub::start(vec![
        Reply::json(
            200,
            message(
                json!([{"type": "text", "text": "I can't help with that."}]),
                "refusal",
            ),
        ),
        Reply::json(
            200,
            message(
                json!([{"type": "text", "text": "The cause is"}]),
                "max_tokens",
            ),
        ),
    ])
    .await;
    let b = claude(&stub);
    assert!(
        matches!(b.diagnose(ctx()).await.unwrap_err(), DiagnoseError::Refusal(m) if m.contains("can't help"))
    );
    assert!(matches!(
        b.diagnose(ctx()).await.unwrap_err(),
        DiagnoseError::MaxTokens
    ));
}

#[tokio::test]
async fn claude_undeclared_action_is_rejected_with_the_raw_answer() {
    let mut a = good_answer(ctx());
    a["recommended_action"] =
        json!({"action": "restart-cluster", "params": {}, "rationale": "why not"});
    let stub = Stub::start(vec![submit_reply(a.clone()), submit_reply(a)]).await;
    match claude(&stub).diagnose(ctx()).await.unwrap_err() {
        DiagnoseError::Rejected { rejection, raw } => {
            assert!(
                rejection
                    .reasons
                    .iter()
                    .any(|r| r.contains("restart-cluster") && r.contains("not declared")),
                "{rejection}"
            );
            assert!(raw.contains("restart-cluster"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn claude_step_cap() {
    let step = || {
        Reply::json(
            200,
            message(
                json!([tool_use("toolu_1", "list_catalog", json!({}))]),
                "tool_use",
            ),
        )
    };
    let stub = Stub::start(vec![step(), step(), step(), step()]).await;
    let Backend::Claude(mut c) = claude(&stub) else {
        unreachable!()
    };
    c.max_steps = 3;
    let e = Backend::Claude(c).diagnose(ctx()).await.unwrap_err();
    assert!(matches!(e, DiagnoseError::StepCap(3)), "{e:?}");
    assert_eq!(stub.requests().len(), 3);
}

#[test]
fn claude_debug_redacts_the_key() {
    let c = ClaudeConfig::with_key(KEY);
    let text = format!("{c:?}");
    assert!(!text.contains(KEY) && text.contains("redacted"), "{text}");
    let o = OpenAiConfig::new("http://x/v1", "m", Some("sk-secret-xyz".into()));
    assert!(!format!("{o:?}").contains("sk-secret-xyz"));
}

// ------------------------------------------------------------------ OpenAI wire format

fn openai(stub: &Stub, key: Option<&str>) -> Backend {
    let mut c = OpenAiConfig::new(
        format!("{}/v1", stub.url()),
        "qwen2.5:7b",
        key.map(String::from),
    );
    c.retry = fast_retry();
    c.timeout = Duration::from_secs(5);
    Backend::OpenAi(c)
}

fn completion(message: Value, finish: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1764000000, "model": "qwen2.5:7b",
           "choices": [{"index": 0, "message": message, "finish_reason": finish}],
           "usage": {"prompt_tokens": 1500, "completion_tokens": 40, "total_tokens": 1540}})
}

fn call(id: &str, name: &str, args: &Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}})
}

fn oa_submit(answer: &Value) -> Reply {
    Reply::json(
        200,
        completion(
            json!({"role": "assistant", "content": null, "tool_calls": [call("call_9", SUBMIT, answer)]}),
            "tool_calls",
        ),
    )
}

#[tokio::test]
async fn openai_multi_step_tool_calls_round_trip() {
    let ctx = ctx();
    let calls = json!([
        call(
            "call_1",
            "component_events",
            &json!({"component": "127.0.0.1:7002"})
        ),
        call("call_2", "list_catalog", &json!({}))
    ]);
    let stub = Stub::start(vec![
        Reply::json(
            200,
            completion(
                json!({"role": "assistant", "content": null, "tool_calls": calls}),
                "tool_calls",
            ),
        ),
        Reply::json(
            200,
            completion(
                json!({"role": "assistant", "content": "Thinking in prose."}),
                "stop",
            ),
        ),
        oa_submit(&good_answer(ctx)),
    ])
    .await;
    let d = openai(&stub, Some("sk-local"))
        .diagnose(ctx)
        .await
        .expect("diagnosis");
    assert_eq!(d.backend, "openai");
    assert_eq!(d.model, "qwen2.5:7b");
    assert_eq!((d.tokens_in, d.tokens_out), (4500, 120));
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.header("authorization"), Some("Bearer sk-local"));
        assert_eq!(r.body["model"], "qwen2.5:7b");
        let tools = r.body["tools"].as_array().unwrap();
        assert!(
            tools
                .iter()
                .all(|t| t["type"] == "function" && t["function"]["parameters"].is_object())
        );
        assert!(tools.iter().any(|t| t["function"]["name"] == SUBMIT));
    }
    let m = reqs[1].body["messages"].as_array().unwrap();
    assert_eq!(m[0]["role"], "system");
    assert_eq!(m[2]["role"], "assistant");
    assert_eq!(m[2]["tool_calls"], calls);
    assert_eq!(m[3]["role"], "tool");
    assert_eq!(m[3]["tool_call_id"], "call_1");
    assert!(m[3]["content"].as_str().unwrap().starts_with(DATA_OPEN));
    assert_eq!(m[4]["tool_call_id"], "call_2");
    // A prose answer gets a nudge to call the tool.
    let m3 = reqs[2].body["messages"].as_array().unwrap();
    assert_eq!(m3.last().unwrap()["role"], "user");
}

#[tokio::test]
async fn openai_without_key_sends_no_authorization() {
    let stub = Stub::start(vec![oa_submit(&good_answer(ctx()))]).await;
    openai(&stub, None).diagnose(ctx()).await.unwrap();
    assert_eq!(stub.requests()[0].header("authorization"), None);
}

#[tokio::test]
async fn openai_429_retry_after_then_success() {
    let stub = Stub::start(vec![
        Reply::json(
            429,
            json!({"error": {"message": "rate limited", "type": "rate_limit"}}),
        )
        .header("retry-after", "1"),
        oa_submit(&good_answer(ctx())),
    ])
    .await;
    let t = Instant::now();
    openai(&stub, None).diagnose(ctx()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn openai_529_then_success_and_500() {
    let stub = Stub::start(vec![
        Reply::json(529, json!({"error": {"message": "overloaded"}})),
        oa_submit(&good_answer(ctx())),
    ])
    .await;
    openai(&stub, None).diagnose(ctx()).await.unwrap();
    let err = || Reply::json(500, json!({"error": {"message": "model crashed"}}));
    let stub = Stub::start(vec![err(), err(), err()]).await;
    let e = openai(&stub, None).diagnose(ctx()).await.unwrap_err();
    assert!(
        matches!(&e, DiagnoseError::Server { status: 500, message } if message == "model crashed"),
        "{e:?}"
    );
}

#[tokio::test]
async fn openai_timeout_malformed_refusal_length() {
    let stub = Stub::start(vec![
        oa_submit(&good_answer(ctx())).delayed(Duration::from_secs(3)),
    ])
    .await;
    let Backend::OpenAi(mut c) = openai(&stub, None) else {
        unreachable!()
    };
    c.timeout = Duration::from_millis(300);
    assert!(matches!(
        Backend::OpenAi(c).diagnose(ctx()).await.unwrap_err(),
        DiagnoseError::Timeout(_)
    ));

    let bad = Reply::json(
        200,
        completion(
            json!({"role": "assistant", "content": null,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": SUBMIT, "arguments": "{\"summary\": \"unterminated"}}]}),
            "tool_calls",
        ),
    );
    let refusal = Reply::json(
        200,
        completion(
            json!({"role": "assistant", "content": null, "refusal": "I won't."}),
            "stop",
        ),
    );
    let length = Reply::json(
        200,
        completion(
            json!({"role": "assistant", "content": "The cause"}),
            "length",
        ),
    );
    let stub = Stub::start(vec![bad, refusal, length]).await;
    let Backend::OpenAi(mut c) = openai(&stub, None) else {
        unreachable!()
    };
    c.max_corrections = 0;
    let b = Backend::OpenAi(c);
    assert!(matches!(
        b.diagnose(ctx()).await.unwrap_err(),
        DiagnoseError::Malformed { .. }
    ));
    assert!(
        matches!(b.diagnose(ctx()).await.unwrap_err(), DiagnoseError::Refusal(m) if m == "I won't.")
    );
    assert!(matches!(
        b.diagnose(ctx()).await.unwrap_err(),
        DiagnoseError::MaxTokens
    ));
}

#[tokio::test]
async fn openai_undeclared_action_is_rejected() {
    let mut a = good_answer(ctx());
    a["recommended_action"] = json!({"action": "ACT-99", "params": {}, "rationale": "x"});
    a["evidence"][0]["reference"] = json!("metric:made_up{}");
    let stub = Stub::start(vec![oa_submit(&a), oa_submit(&a)]).await;
    match openai(&stub, None).diagnose(ctx()).await.unwrap_err() {
        DiagnoseError::Rejected { rejection, .. } => {
            assert!(
                rejection.reasons.iter().any(|r| r.contains("ACT-99")),
                "{rejection}"
            );
            assert!(
                rejection
                    .reasons
                    .iter()
                    .any(|r| r.contains("metric:made_up")),
                "{rejection}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The first rejection went back as the tool's result, once.
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 2);
    let m = reqs[1].body["messages"].as_array().unwrap();
    let last = m.last().unwrap();
    assert_eq!(last["role"], "tool");
    assert_eq!(last["tool_call_id"], "call_9");
    assert!(last["content"].as_str().unwrap().contains("ACT-99"));
}
