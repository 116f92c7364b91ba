//! `operator:subject/logs`: the tail of a component's log, from a source the user
//! configured as the setting `log.<component>` = `file:/path` or `docker:<container>`.
//! A plugin can read only the sources the user named.

use crate::runtime::bindings::operator::subject::logs::Host;
use crate::runtime::state::HostState;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    File(PathBuf),
    Docker(String),
}

pub const SETTING_PREFIX: &str = "log.";
const MAX_LINES: u32 = 1000;

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
pub fn tail_file(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    const BLOCK: u64 = 64 * 1024;
    while pos > 0 && buf.iter().filter(|b| **b == b'\n').count() <= n {
        let step = BLOCK.min(pos);
        pos -= step;
        file.seek(SeekFrom::Start(pos))?;
        let mut block = vec![0; step as usize];
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    Ok(lines[start..].iter().map(|s| s.to_string()).collect())
}

impl Host for HostState {
    fn tail(&mut self, component: String, lines: u32) -> Result<Vec<String>, String> {
        let n = lines.min(MAX_LINES) as usize;
        let source = self.ctx.log_sources.get(&component).cloned().ok_or_else(|| {
            format!("no log source for `{component}` (set {SETTING_PREFIX}{component}=file:/path or docker:<name>)")
        })?;
        let remaining = self
            .remaining()
            .ok_or_else(|| "deadline exceeded".to_string())?;
        match source {
            LogSource::File(path) => {
                tail_file(&path, n).map_err(|e| format!("reading {}: {e}", path.display()))
            }
            LogSource::Docker(container) => {
                let docker = self
                    .ctx
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
                    let mut text = String::new();
                    while let Some(item) = stream.next().await {
                        let item = item.map_err(|e| format!("docker logs {container}: {e}"))?;
                        text.push_str(&item.to_string());
                    }
                    Ok::<_, String>(text.lines().map(String::from).collect::<Vec<_>>())
                };
                self.ctx.io.block_on(async move {
                    tokio::time::timeout(remaining.min(Duration::from_secs(5)), collect)
                        .await
                        .map_err(|_| "timed out reading docker logs".to_string())?
                })
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
        let got = tail_file(&path, 3).unwrap();
        assert_eq!(got, vec!["line 19997", "line 19998", "line 19999"]);
        assert_eq!(tail_file(&path, 30_000).unwrap().len(), 20_000);
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
