//! Child processes: the workspace's binaries, children killed on drop, signals, and capture
//! of a child's output (kept for error messages, echoed with `RL_TEST_LOGS=1`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A binary of this workspace, from the target directory the tests were built into.
/// `cargo test --workspace` builds every package's binaries before running tests.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or build it with `cargo build -p ...` in the same profile first)",
        bin.display()
    );
    bin
}

/// A child process killed (SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A signal the harness sends to its own children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A clean shutdown request.
    Term,
    /// Freezes the process: it keeps its sockets but answers nothing.
    Stop,
    /// Resumes a stopped process.
    Cont,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// Sends `signal` to a child of this process.
///
/// Only for a child that has not been reaped yet (`wait` not called): its pid cannot have
/// been reused, so the signal reaches the intended process.
pub fn signal(child: &Child, signal: Signal) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| std::io::Error::other(format!("pid {} out of range", child.id())))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal.raw()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits up to `timeout` for the child to exit; None if it is still running.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// How many of a child's last output lines are kept for error messages.
const TAIL_LINES: usize = 200;

/// A thread draining one pipe of a child (so the child never blocks on a full pipe), keeping
/// its last lines.
pub struct Output {
    lines: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Output {
    /// Drains `pipe`, calling `on_line` with every line and echoing lines to the test's
    /// stderr as `[label] line` when `echo` is set.
    pub fn capture(
        pipe: impl Read + Send + 'static,
        label: String,
        echo: bool,
        mut on_line: impl FnMut(&str) + Send + 'static,
    ) -> Output {
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let keep = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if echo {
                    eprintln!("[{label}] {line}");
                }
                on_line(&line);
                let mut tail = keep.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        Output {
            lines,
            reader: Some(reader),
        }
    }

    /// The lines kept so far, joined.
    pub fn text(&self) -> String {
        let tail = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Everything the child wrote, once it has exited (the pipe then reaches its end).
    pub fn finish(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.text()
    }
}
