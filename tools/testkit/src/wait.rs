//! Bounded polling.

use std::time::{Duration, Instant};

/// How often [`wait_for`] polls.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `f` every 50 ms until it returns Some, or panics after `timeout` naming `what`.
///
/// The timeout is a bound on a hang, not a speed requirement: choose it generously, since the
/// machine running the tests may be busy.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_some() {
        let mut n = 0;
        let v = wait_for("the third call", Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for nothing")]
    fn panics_naming_what_it_waited_for() {
        wait_for::<()>("nothing", Duration::from_millis(60), || None);
    }
}
