//! A real `redis-server` child on a loopback port, without persistence, killed on drop.
//!
//! redis-server cannot listen on TCP port 0, so a fresh port is chosen and the server is
//! started again on another port when its bind fails. Whether it failed to bind is read from
//! its own output (`Address already in use`), and readiness from its own
//! `Ready to accept connections` line, so the harness never mistakes another process's
//! server on that port for its own.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::net::{PortAttempt, with_fresh_port};
use crate::process::{Output, Signal, signal, wait_exit};
use crate::wait::wait_for;

/// How long one start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a restart on a remembered port waits for that port to become free.
const PORT_FREE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why one start of redis-server failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("port {0} is in use")]
    PortInUse(u16),
    #[error("cannot run redis-server ({0}); is it installed? Debian: apt-get install redis-server")]
    Spawn(std::io::Error),
    #[error(
        "redis-server on port {port} exited with {status} before it was ready; its output:\n{output}"
    )]
    Exited {
        port: u16,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error(
        "redis-server on port {port} was not ready within {START_TIMEOUT:?}; its output:\n{output}"
    )]
    NotReady { port: u16, output: String },
}

/// A redis-server on a loopback port, without persistence, killed on drop.
pub struct Redis {
    child: Option<Child>,
    output: Option<Output>,
    pub port: u16,
}

impl Redis {
    /// Starts on a fresh port, trying another one if the chosen port is taken first.
    pub fn start() -> Redis {
        with_fresh_port("redis-server", 10, |port| {
            Redis::try_start(port).map_err(|e| match e {
                StartError::PortInUse(_) => PortAttempt::InUse,
                other => PortAttempt::Failed(other),
            })
        })
    }

    /// Starts on a given port, e.g. after [`Redis::kill`], retrying while the port is still
    /// in use (by the old server's last moments, or by whoever took it meanwhile).
    pub fn start_on(port: u16) -> Redis {
        wait_for(
            &format!("port {port} to be free for redis-server"),
            PORT_FREE_TIMEOUT,
            || match Redis::try_start(port) {
                Ok(r) => Some(r),
                Err(StartError::PortInUse(_)) => None,
                Err(e) => panic!("could not start redis-server: {e}"),
            },
        )
    }

    /// Starts again on the same port, after [`Redis::kill`].
    pub fn restart(&mut self) {
        self.kill();
        *self = Redis::start_on(self.port);
    }

    /// One attempt on `port`.
    pub fn try_start(port: u16) -> Result<Redis, StartError> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // Logs go to stdout, which is where the harness reads readiness and bind errors.
            .args(["--logfile", "", "--loglevel", "notice"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(StartError::Spawn)?;
        let (ready_tx, ready_rx) = channel();
        let echo = crate::echo_logs();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut output = Output::capture(stdout, format!("redis:{port}"), echo, move |line| {
            if line.contains("Ready to accept connections") {
                let _ = ready_tx.send(());
            }
        });
        // Nothing is expected on stderr; drain it so a surprise cannot block the server.
        let mut errors = Output::capture(stderr, format!("redis:{port}"), echo, |_| {});
        match wait_ready(&mut child, port, &ready_rx) {
            Ok(()) => Ok(Redis {
                child: Some(child),
                output: Some(output),
                port,
            }),
            Err(status) => {
                if status.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let text = format!("{}\n{}", output.finish(), errors.finish());
                Err(match status {
                    Some(_) if text.contains("Address already in use") => {
                        StartError::PortInUse(port)
                    }
                    Some(status) => StartError::Exited {
                        port,
                        status,
                        output: text,
                    },
                    None => StartError::NotReady { port, output: text },
                })
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: an outage, not a clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut o) = self.output.take() {
            o.finish();
        }
    }

    /// SIGSTOP: the server keeps its port and its clients' connections but answers nothing,
    /// like a hung or overloaded Redis. [`Redis::resume`] undoes it; drop still kills it.
    pub fn pause(&self) {
        let child = self
            .child
            .as_ref()
            .expect("pause: redis-server is not running");
        signal(child, Signal::Stop).expect("SIGSTOP redis-server");
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) {
        let child = self
            .child
            .as_ref()
            .expect("resume: redis-server is not running");
        signal(child, Signal::Cont).expect("SIGCONT redis-server");
    }

    /// What the server has logged so far (its last lines).
    pub fn logs(&self) -> String {
        self.output.as_ref().map(Output::text).unwrap_or_default()
    }

    /// Sends one command and returns the first reply line (`+OK`, `:1`, `$1`, ...).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        command_on(self.port, args)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ok once this child said it is ready and answers PING; Err(Some(status)) if it exited,
/// Err(None) if it did neither in time.
fn wait_ready(
    child: &mut Child,
    port: u16,
    ready: &Receiver<()>,
) -> Result<(), Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut said_ready = false;
    while Instant::now() < deadline {
        if let Some(status) = wait_exit(child, Duration::ZERO) {
            return Err(Some(status));
        }
        said_ready = said_ready || ready.try_recv().is_ok();
        // Only after its own "ready" line: a PONG before it could come from another
        // process's server that holds the port.
        if said_ready && command_on(port, &["PING"]).is_ok_and(|r| r == "+PONG") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(None)
}

fn command_on(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_taken_port_is_reported_as_in_use_not_as_ready() {
        // Something else holds the port (and would even accept connections).
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        match Redis::try_start(port) {
            Err(StartError::PortInUse(p)) => assert_eq!(p, port),
            Err(e) => panic!("expected PortInUse, got {e}"),
            Ok(_) => panic!("started on a port another socket holds"),
        }
    }

    #[test]
    fn start_then_restart_on_the_same_port() {
        let mut r = Redis::start();
        assert_eq!(r.command(&["SET", "k", "v"]).unwrap(), "+OK");
        let port = r.port;
        r.restart();
        assert_eq!(r.port, port);
        // A new, empty server (no persistence).
        assert_eq!(r.command(&["EXISTS", "k"]).unwrap(), ":0");
    }

    #[test]
    fn start_on_waits_until_the_port_is_free() {
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            drop(holder);
        });
        let r = Redis::start_on(port);
        release.join().unwrap();
        assert_eq!(r.port, port);
        assert_eq!(r.command(&["PING"]).unwrap(), "+PONG");
    }

    #[test]
    fn a_paused_server_answers_nothing_until_resumed() {
        let r = Redis::start();
        r.pause();
        assert!(r.command(&["PING"]).is_err(), "a stopped server answered");
        r.resume();
        assert_eq!(r.command(&["PING"]).unwrap(), "+PONG");
    }
}
