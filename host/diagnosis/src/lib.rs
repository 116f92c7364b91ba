//! Diagnosis for the operator: from an incident's tickets and observations to a record
//! that says what is happening, which explanations were weighed and why they were
//! rejected, what to do and what would change the verdict. It links no wasmtime and no
//! SQLite: the host stores tickets and records, this crate reasons.
//!
//! - [`context`]: the input the host fills ([`TicketFacts`], [`ObservationPoint`],
//!   [`ContextInput`]) and the bounded [`Context`] built from it: what changed between the
//!   last healthy observation and the current one, with onset, breadth and co-movement;
//!   every item has a reference (`ticket:12.evidence.error_kind`, `component:db-1.state`,
//!   `metric:name{k="v"}`, `rate:x_total{..}`, `mean:x_seconds{..}`, `event:14.0`), and
//!   the context knows every valid one. Sizes are estimated at 4 characters per token.
//! - [`incident`]: [`incident::group`] turns tickets into incidents with a root and
//!   symptoms, each with a reason.
//! - [`record`]: the stored [`Diagnosis`], the [`record::Answer`] a backend gives, its JSON
//!   Schema, and [`record::validate`] which rejects undeclared actions, ill-fitting or
//!   ungrounded parameters, uncited evidence, too few alternatives, bad confidence.
//! - [`offline`]: the deterministic default reasoner.
//! - [`backend`]: [`Backend`] (offline, Claude, OpenAI-compatible) and [`DiagnoseError`].
//! - [`report`]: [`report::render`], the text `operator tickets show` prints.
//!
//! ```
//! use operator_diagnosis::{Backend, Context, ContextInput, incident, report};
//! use operator_model::SubjectMetadata;
//!
//! # fn demo(metadata: SubjectMetadata, tickets: Vec<operator_diagnosis::TicketFacts>,
//! #         history: Vec<operator_diagnosis::ObservationPoint>) {
//! for inc in incident::group(&tickets, &history) {
//!     let input = ContextInput {
//!         subject: "my-cluster".into(),
//!         metadata: metadata.clone(),
//!         tickets: tickets.iter().filter(|t| inc.tickets().any(|id| id == t.id)).cloned().collect(),
//!         root: Some(inc.root),
//!         history: history.clone(),
//!     };
//!     let ctx = Context::build(input, operator_diagnosis::context::DEFAULT_BUDGET_TOKENS);
//!     // Offline needs no runtime; the LLM backends are async: Backend::Claude(..).diagnose(&ctx).await
//!     let diagnosis = operator_diagnosis::offline::diagnose(&ctx).expect("offline answers validate");
//!     let text = report::render(&diagnosis, &report::ReportInput {
//!         ticket_line: format!("#{}", inc.root),
//!         action_command_prefix: "operator action --subject my-cluster".into(),
//!         ..Default::default()
//!     }, false);
//!     println!("{text}");
//!     let _ = Backend::Offline; // or Backend::Claude(ClaudeConfig::from_env()?)
//! }
//! # }
//! ```

pub mod backend;
pub mod context;
pub mod incident;
pub mod offline;
pub mod prompt;
pub mod record;
pub mod report;

pub use backend::{Backend, ClaudeConfig, DiagnoseError, OpenAiConfig, RetryPolicy};
pub use context::{Context, ContextInput, ObservationPoint, TicketFacts};
pub use incident::{Incident, Member, Role};
pub use record::{Diagnosis, Rejection};
