//! Test support shared by the service's and the operator's tests: free loopback ports,
//! bounded waits and a real `redis-server` child process. Std only, so any test crate can
//! use it without pulling in a runtime.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Polls `f` every 50 ms until it returns Some, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redis-server on a loopback port, without persistence, killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    /// Starts on a fresh port (retrying if another test grabbed it first).
    pub fn start() -> Redis {
        for _ in 0..5 {
            if let Some(r) = Redis::try_start(free_port()) {
                return r;
            }
        }
        panic!("could not start redis-server (is it installed? Debian: redis-server)");
    }

    /// Starts on a given port, e.g. after [`Redis::kill`]; waits for it to be free.
    pub fn start_on(port: u16) -> Redis {
        wait_for(
            &format!("redis-server to start on port {port}"),
            Duration::from_secs(10),
            || Redis::try_start(port),
        )
    }

    /// Starts again on the same port, after [`Redis::kill`].
    pub fn restart(&mut self) {
        self.kill();
        *self = Redis::start_on(self.port);
    }

    fn try_start(port: u16) -> Option<Redis> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None; // it exited: the port was taken
            }
            if command_on(port, &["PING"]).is_ok_and(|r| r == "+PONG") {
                return Some(Redis {
                    child: Some(child),
                    port,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: an outage, not a clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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

fn command_on(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("socket address"),
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
