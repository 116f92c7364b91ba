//! `operator tickets`: list, show and resolve tickets.

use super::args::{DEFAULT_DB, Output};
use super::output::{format_time, print_json};
use crate::tickets::{Status, Ticket, TicketStore};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use operator_diagnosis::{Diagnosis, report::ReportInput};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum TicketsCommand {
    /// List tickets.
    List {
        #[arg(long, value_parser = parse_status)]
        status: Option<Status>,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, default_value = DEFAULT_DB)]
        db: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one ticket with its history and observations.
    Show {
        id: i64,
        #[arg(long, default_value = DEFAULT_DB)]
        db: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Resolve a ticket by hand.
    Resolve {
        id: i64,
        #[arg(long, default_value = DEFAULT_DB)]
        db: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s).ok_or_else(|| {
        format!("unknown status `{s}` (expected open, diagnosing, diagnosed or resolved)")
    })
}

pub fn tickets(cmd: TicketsCommand) -> Result<()> {
    let open = |db: &Path| -> Result<TicketStore> {
        if !db.exists() {
            bail!(
                "no ticket database at {} (run `operator run` first, or pass --db)",
                db.display()
            );
        }
        TicketStore::open(db).with_context(|| format!("opening ticket database {}", db.display()))
    };
    match cmd {
        TicketsCommand::List {
            status,
            subject,
            db,
            output,
        } => {
            let list = open(&db)?.list(status, subject.as_deref())?;
            match output {
                Output::Json => print_json(&list)?,
                Output::Text => print_ticket_table(&list),
            }
        }
        TicketsCommand::Show { id, db, output } => {
            let d = open(&db)?.detail(id)?;
            match output {
                Output::Json => print_json(&d)?,
                Output::Text => {
                    let t = &d.ticket;
                    println!(
                        "#{} [{}] {} {} on {}",
                        t.id,
                        t.status.as_str(),
                        t.severity,
                        t.invariant,
                        t.subject
                    );
                    println!("  {}", t.summary);
                    if !t.component.is_empty() {
                        println!("  component: {}", t.component);
                    }
                    println!(
                        "  seen {} times, first {} last {}",
                        t.count,
                        format_time(t.first_seen),
                        format_time(t.last_seen)
                    );
                    println!("  evidence:");
                    for (k, v) in &t.evidence {
                        println!(
                            "    {k} = {}",
                            v.as_str()
                                .map(String::from)
                                .unwrap_or_else(|| v.to_string())
                        );
                    }
                    println!("  history:");
                    for e in &d.events {
                        println!("    {} {} {}", format_time(e.at), e.kind, e.detail);
                    }
                    println!("  observations kept: {}", d.observations.len());
                    if let Some(inc) = &t.incident {
                        println!("  incident: #{} ({}): {}", inc.id, inc.role, inc.reason);
                    }
                    if let Some(record) = &t.diagnosis {
                        match serde_json::from_value::<Diagnosis>(record.clone()) {
                            Ok(diag) => {
                                println!();
                                print!("{}", report(t, &diag, vec![], color()));
                            }
                            Err(e) => println!("  diagnosis: stored record unreadable ({e})"),
                        }
                    } else if let Some(err) = &t.diagnosis_state.last_error {
                        println!("  diagnosis: not yet; last attempt failed: {err}");
                    }
                }
            }
        }
        TicketsCommand::Resolve { id, db, output } => {
            let t = open(&db)?.resolve(id, crate::now_ms())?;
            match output {
                Output::Json => print_json(&t)?,
                Output::Text => println!("#{} resolved", t.id),
            }
        }
    }
    Ok(())
}

fn print_ticket_table(list: &[Ticket]) {
    if list.is_empty() {
        println!("no tickets");
        return;
    }
    println!(
        "{:>5}  {:<10} {:<8} {:<9} {:>5}  {:<20} {:<12} SUMMARY",
        "ID", "STATUS", "SEVERITY", "INVARIANT", "COUNT", "LAST SEEN", "INCIDENT"
    );
    for t in list {
        println!(
            "{:>5}  {:<10} {:<8} {:<9} {:>5}  {:<20} {:<12} {}",
            t.id,
            t.status.as_str(),
            t.severity.as_str(),
            t.invariant,
            t.count,
            format_time(t.last_seen),
            t.incident
                .as_ref()
                .map(|i| format!("#{} {}", i.id, i.role))
                .unwrap_or_default(),
            t.summary
        );
    }
}

/// Colour only on a terminal, and never when NO_COLOR is set.
pub fn color() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none()
}

/// The diagnosis report of a ticket.
pub fn report(t: &Ticket, d: &Diagnosis, incident_lines: Vec<String>, color: bool) -> String {
    let input = ReportInput {
        ticket_line: format!(
            "#{} {} {} {}: {} ({}, seen {} ticks)",
            t.id, t.invariant, t.severity, t.component, t.summary, t.status, t.count
        ),
        incident_lines,
        action_command_prefix: format!("operator action --subject {}", t.subject),
        when: format_time(crate::now_ms()),
    };
    operator_diagnosis::report::render(d, &input, color)
}
