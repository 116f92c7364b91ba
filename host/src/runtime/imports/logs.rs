//! `operator:subject/logs`: the tail of a component's log, from a source the user
//! configured as the setting `log.<component>` = `file:/path` or `docker:<container>`.
//! A plugin can read only the sources the user named.

use crate::runtime::bindings::latest::operator::subject::logs::Host;
use crate::runtime::limits::{LogsLimits, truncate};
use crate::runtime::state::HostState;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    File(PathBuf),
    Docker(String),
}

pub const SETTING_PREFIX: &str = "log.";

/// Reads `log.<component>` settings. A malformed one is an error naming it.
pub fn sources_from_settings(
    settings: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, LogSource>, String> {
    let mut out = BTreeMap::new();
    for (key, value) in settings {
        let Some(component) = key.strip_prefix(SETTING_PREFIX) else {
            continue;
        };
        let source = if let Some(path) = value.strip_prefix("file:") {
            LogSource::File(PathBuf::from(path))
        } else if let Some(name) = value.strip_prefix("docker:") {
            LogSource::Docker(name.to_string())
        } else {
            return Err(format!(
                "setting `{key}` = `{value}`: expected file:/path or docker:<container>"
            ));
        };
        out.insert(component.to_string(), source);
    }
    Ok(out)
}

/// The last `n` lines of a file, reading backwards in blocks so a large log costs little.
/// Newlines are counted in each new block only (linear in what is read), at most
/// `limits.max_bytes` are read, and each line is cut to `limits.max_line_bytes`.
pub fn tail_file(path: &Path, n: usize, limits: &LogsLimits) -> std::io::Result<Vec<String>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut pos = len;
    // Blocks read so far, newest first; joined once at the end.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    let mut read = 0usize;
    const BLOCK: u64 = 64 * 1024;
    while pos > 0 && newlines <= n && read < limits.max_bytes {
        let step = BLOCK.min(pos).min((limits.max_bytes - read) as u64);
        pos -= step;
        file.seek(SeekFrom::Start(pos))?;
        let mut block = vec![0; step as usize];
        file.read_exact(&mut block)?;
        newlines += block.iter().filter(|b| **b == b'\n').count();
        read += block.len();
        blocks.push(block);
    }
    let mut buf = Vec::with_capacity(read);
    for b in blocks.iter().rev() {
        buf.extend_from_slice(b);
    }
    Ok(last_lines(&buf, n, pos > 0, limits))
}

/// The last `n` lines of `buf`, each cut to the line cap. When `partial_start`, the first
/// line may be the tail of a longer one and is dropped unless it is all there is.
fn last_lines(buf: &[u8], n: usize, partial_start: bool, limits: &LogsLimits) -> Vec<String> {
    let text = String::from_utf8_lossy(buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if partial_start && lines.len() > 1 {
        lines.remove(0);
    }
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| {
            let mut l = l.to_string();
            truncate(&mut l, limits.max_line_bytes);
            l
        })
        .collect()
}

impl Host for HostState {
    async fn tail(&mut self, component: String, lines: u32) -> Result<Vec<String>, String> {
        let limits = self.ctx.logs.limits;
        self.calls.log_tails += 1;
        if self.calls.log_tails > limits.max_tails_per_call {
            return Err(format!(
                "tail cap reached: at most {} log tails per call",
                limits.max_tails_per_call
            ));
        }
        let n = (lines as usize).min(limits.max_lines);
        let source = self.ctx.logs.sources.get(&component).cloned().ok_or_else(|| {
            format!("no log source for `{component}` (set {SETTING_PREFIX}{component}=file:/path or docker:<name>)")
        })?;
        let remaining = self
            .remaining()
            .ok_or_else(|| "deadline exceeded".to_string())?;
        match source {
            LogSource::File(path) => {
                let read = tokio::task::spawn_blocking(move || {
                    tail_file(&path, n, &limits)
                        .map_err(|e| format!("reading {}: {e}", path.display()))
                });
                match tokio::time::timeout(remaining, read).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Err(format!("reading the log failed: {e}")),
                    Err(_) => Err("timed out reading the log file".into()),
                }
            }
            LogSource::Docker(container) => {
                let docker = self
                    .ctx
                    .logs
                    .docker
                    .get_or_init(|| {
                        bollard::Docker::connect_with_local_defaults()
                            .map_err(|e| format!("cannot reach the Docker engine: {e}"))
                    })
                    .clone()?;
                let options = bollard::query_parameters::LogsOptionsBuilder::new()
                    .stdout(true)
                    .stderr(true)
                    .tail(&n.to_string())
                    .build();
                let collect = async move {
                    let mut stream = docker.logs(&container, Some(options));
                    let mut buf: Vec<u8> = Vec::new();
                    while let Some(item) = stream.next().await {
                        let item = item.map_err(|e| format!("docker logs {container}: {e}"))?;
                        let bytes = item.into_bytes();
                        if buf.len() + bytes.len() > limits.max_bytes {
                            // Keep what fits: the newest lines are the ones asked for,
                            // and Docker sends them last, so stop reading here.
                            break;
                        }
                        buf.extend_from_slice(&bytes);
                    }
                    Ok::<_, String>(last_lines(&buf, n, false, &limits))
                };
                tokio::time::timeout(remaining, collect)
                    .await
                    .map_err(|_| "timed out reading docker logs".to_string())?
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let body: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, body).unwrap();
        let l = crate::runtime::limits::Limits::default().logs;
        let got = tail_file(&path, 3, &l).unwrap();
        assert_eq!(got, vec!["line 19997", "line 19998", "line 19999"]);
        assert_eq!(tail_file(&path, 30_000, &l).unwrap().len(), 20_000);
    }

    /// One enormous line: the read stops at the byte cap and the line at the line cap,
    /// instead of rescanning a growing buffer for newlines.
    #[test]
    fn one_enormous_line_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut body = "x".repeat(64 * 1024 * 1024);
        body.push_str("\nlast\n");
        std::fs::write(&path, body).unwrap();
        let l = crate::runtime::limits::Limits::default().logs;
        let got = tail_file(&path, 5, &l).unwrap();
        assert_eq!(got.last().map(String::as_str), Some("last"));
        assert!(
            got.iter().all(|g| g.len() <= l.max_line_bytes),
            "lines are cut"
        );
    }

    #[test]
    fn parses_sources_and_rejects_unknown_kinds() {
        let mut s = BTreeMap::new();
        s.insert("log.node-1".to_string(), "file:/var/log/n1.log".to_string());
        s.insert("log.redis".to_string(), "docker:rl-redis".to_string());
        s.insert("nodes".to_string(), "http://x".to_string());
        let got = sources_from_settings(&s).unwrap();
        assert_eq!(got["node-1"], LogSource::File("/var/log/n1.log".into()));
        assert_eq!(got["redis"], LogSource::Docker("rl-redis".into()));
        s.insert("log.bad".to_string(), "ftp://x".to_string());
        assert!(sources_from_settings(&s).unwrap_err().contains("log.bad"));
    }
}
