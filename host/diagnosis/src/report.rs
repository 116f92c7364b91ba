//! The report a person reads (`operator tickets show ID`).

use crate::record::{Diagnosis, OBSERVE, UNKNOWN, WAIT};
use std::fmt::Write;

/// What the host knows around the record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportInput {
    /// e.g. `#12 INV-02 critical db-1: db-1 does not answer (open, seen 5 ticks)`.
    pub ticket_line: String,
    /// e.g. `incident of 5 tickets: root #12; symptoms #13 (INV-04 ...)`, one per line.
    pub incident_lines: Vec<String>,
    /// Everything before the action id, e.g. `operator action --subject NAME --set
    /// url=...`: the host passes the source flags it was run with.
    pub action_command_prefix: String,
    /// When the record was written, as the host formats it.
    pub when: String,
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn head(&self, text: &str) -> String {
        self.paint("1;4", text)
    }
    fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
    fn risk(&self, risk: &str) -> String {
        match risk {
            "high" => self.paint("1;31", risk),
            "medium" => self.paint("33", risk),
            "low" => self.paint("32", risk),
            _ => self.dim(risk),
        }
    }
}

/// Single-quotes a shell word when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/=@,+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The exact command that runs the recommendation, if it is an action.
pub fn action_command(d: &Diagnosis, prefix: &str) -> Option<String> {
    let a = &d.recommended_action;
    if a.is_passive() {
        return None;
    }
    let mut cmd = format!("{} {}", prefix.trim_end(), shell_word(&a.action));
    for (k, v) in &a.params {
        let _ = write!(cmd, " --param {}", shell_word(&format!("{k}={v}")));
    }
    if a.mutates {
        cmd.push_str(" --allow-actions");
    }
    Some(cmd)
}

/// Strips control characters (ANSI escapes included) from text that came from a
/// backend or the cluster, so that it cannot repaint the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}

/// Renders the report. ANSI colour only when `color` is true (the host decides from
/// isatty and NO_COLOR).
pub fn render(d: &Diagnosis, input: &ReportInput, color: bool) -> String {
    let s = Style { color };
    let mut out = String::new();
    let _ = writeln!(out, "{}", s.bold(&clean(&input.ticket_line)));
    for l in &input.incident_lines {
        let _ = writeln!(out, "  {}", clean(l));
    }
    let _ = writeln!(
        out,
        "{}",
        s.dim(&format!(
            "diagnosed by {} ({}){} in {} ms, {} tokens in / {} out",
            clean(&d.backend),
            clean(&d.model),
            if input.when.is_empty() {
                String::new()
            } else {
                format!(" at {}", clean(&input.when))
            },
            d.duration_ms,
            d.tokens_in,
            d.tokens_out
        ))
    );

    let _ = writeln!(out, "\n{}", s.head("Observation"));
    let _ = writeln!(out, "  {}", clean(&d.summary));

    let _ = writeln!(out, "\n{}", s.head("Root cause"));
    let rc = &d.root_cause;
    let fm = if rc.failure_mode == UNKNOWN {
        s.paint("33", "unknown")
    } else {
        s.bold(&clean(&rc.failure_mode))
    };
    let _ = writeln!(
        out,
        "  {fm} at {}   confidence {:.0}%",
        s.bold(&clean(&rc.component)),
        d.confidence * 100.0
    );
    let _ = writeln!(out, "  {}", clean(&rc.mechanism));

    let _ = writeln!(out, "\n{}", s.head("Evidence"));
    for e in &d.evidence {
        let source = format!("{:?}", e.source).to_lowercase();
        let _ = writeln!(
            out,
            "  [{source}] {} = {}",
            s.paint("36", &clean(&e.reference)),
            clean(&e.value)
        );
        let _ = writeln!(out, "          {}", s.dim(&clean(&e.meaning)));
    }

    let _ = writeln!(out, "\n{}", s.head("Options considered"));
    let _ = writeln!(
        out,
        "  1. {} {}",
        s.bold(&clean(&rc.failure_mode)),
        s.dim("(chosen)")
    );
    for a in &d.alternatives {
        let _ = writeln!(out, "  {}. {}", a.rank, clean(&a.hypothesis));
        let _ = writeln!(out, "     against: {}", clean(&a.evidence_against));
        let _ = writeln!(out, "     why not: {}", clean(&a.why_rejected));
    }

    let _ = writeln!(out, "\n{}", s.head("Recommendation"));
    let a = &d.recommended_action;
    match a.action.as_str() {
        OBSERVE | WAIT => {
            let _ = writeln!(out, "  {} (changes nothing)", s.bold(&a.action));
        }
        id => {
            let _ = writeln!(
                out,
                "  {}  risk {}, {}",
                s.bold(&clean(id)),
                s.risk(a.risk.as_str()),
                if a.mutates {
                    "changes the subject"
                } else {
                    "read-only"
                }
            );
        }
    }
    let _ = writeln!(out, "  {}", clean(&a.rationale));
    if let Some(cmd) = action_command(d, &input.action_command_prefix) {
        let _ = writeln!(out, "  run: {}", s.paint("1;32", &clean(&cmd)));
    }

    let _ = writeln!(out, "\n{}", s.head("What would change my mind"));
    let _ = writeln!(out, "  {}", clean(&d.what_would_change_my_mind));
    out
}
