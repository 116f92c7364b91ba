//! Prints every fixture's report and context size (run with --nocapture to read them);
//! asserts the context budget and trimming.

mod common;

use common::{FAULTS, load};
use operator_diagnosis::context::{Context, DEFAULT_BUDGET_TOKENS};
use operator_diagnosis::{offline, report};

#[test]
fn context_fits_the_budget_for_every_fixture_and_keeps_the_tickets() {
    for name in FAULTS {
        let fx = load(name);
        let input = fx.input();
        let n_tickets = input.tickets.len();
        let ctx = Context::build(input, DEFAULT_BUDGET_TOKENS);
        let (tc, te) = ctx.trimmed();
        println!(
            "{name:<14} tokens {:>5}  changes kept {:>3} trimmed {:>3}  events kept {:>2} trimmed {:>2}",
            ctx.estimated_tokens(),
            ctx.changes().len(),
            tc,
            ctx.events().len(),
            te
        );
        assert!(
            ctx.estimated_tokens() <= DEFAULT_BUDGET_TOKENS,
            "{name}: {}",
            ctx.estimated_tokens()
        );
        let data = ctx.data_json();
        assert_eq!(
            data["incident"]["tickets"].as_array().unwrap().len(),
            n_tickets
        );
        let d = offline::diagnose(&ctx).unwrap();
        let text = report::render(
            &d,
            &report::ReportInput {
                ticket_line: format!("{} ({})", name, fx.fault),
                incident_lines: vec![],
                action_command_prefix: "operator action --subject ratelimiter --set nodes=..."
                    .into(),
                when: String::new(),
            },
            false,
        );
        println!("{text}");
    }
}
