//! The deadline clock: advances the engine's epoch only when a call's deadline comes.
//!
//! A guest that spins never returns to the host, so only an epoch change can stop it. A
//! ticker that advanced the epoch every 100 ms woke a thread ten times a second whether or
//! not a guest was running: about a twelfth of an idle-between-ticks monitor's CPU (perf of
//! `operator run` against `tick_cost`'s live subject). Here a call arms its deadline for as
//! long as it runs; one thread sleeps until the earliest armed deadline and only then
//! advances the epoch. Every store's epoch callback then compares its own call's deadline
//! with the time, so a store whose call still has time goes on, and a deadline is exact
//! instead of rounded up to a tick.
//!
//! A monitor ticking every second with a 10 s deadline wakes the thread about twice per
//! deadline period (once when a call arms the first deadline after an idle spell, once
//! when that deadline passes unused), instead of a hundred times.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use wasmtime::{Engine, EngineWeak};

/// The thread and the deadlines it watches. Dropping it stops the thread.
pub struct DeadlineClock {
    deadlines: Deadlines,
}

/// Where calls arm their deadlines; cheap to clone, and it does not keep the thread alive.
#[derive(Clone)]
pub struct Deadlines {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Armed deadlines and how many calls armed each.
    armed: BTreeMap<Instant, usize>,
    /// What the thread sleeps until; `None` while it waits for a first deadline.
    target: Option<Instant>,
    /// How many times the epoch was advanced (tests read it).
    advanced: u64,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (each change is one step), so a
        // poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DeadlineClock {
    /// Starts the clock's thread for `engine`. The thread holds the engine weakly and ends
    /// with the clock or the engine.
    pub fn start(engine: &Engine) -> std::io::Result<DeadlineClock> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let theirs = shared.clone();
        let engine = engine.weak();
        std::thread::Builder::new()
            .name("deadline-clock".into())
            .spawn(move || run(&theirs, &engine))?;
        Ok(DeadlineClock {
            deadlines: Deadlines { shared },
        })
    }

    /// The handle calls arm their deadlines with.
    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }
}

impl Deadlines {
    /// Arms `at` until the returned guard is dropped: if it is still armed when `at`
    /// comes, the epoch advances and running stores check their deadlines.
    pub fn arm(&self, at: Instant) -> Armed {
        let mut state = self.shared.lock();
        *state.armed.entry(at).or_default() += 1;
        // Only a deadline earlier than what the thread sleeps until needs to wake it.
        if state.target.is_none_or(|t| at < t) {
            self.shared.wake.notify_one();
        }
        Armed {
            shared: self.shared.clone(),
            at,
        }
    }

    /// How many times the epoch has advanced.
    pub fn advanced(&self) -> u64 {
        self.shared.lock().advanced
    }

    /// Deadlines armed now.
    pub fn armed(&self) -> usize {
        self.shared.lock().armed.values().sum()
    }
}

impl Drop for DeadlineClock {
    fn drop(&mut self) {
        self.deadlines.shared.lock().stop = true;
        self.deadlines.shared.wake.notify_one();
    }
}

/// An armed deadline; dropping it disarms it.
#[must_use = "the deadline is disarmed when this is dropped"]
pub struct Armed {
    shared: Arc<Shared>,
    at: Instant,
}

impl Drop for Armed {
    fn drop(&mut self) {
        // No wake-up: a thread sleeping until this deadline wakes, finds it gone, and
        // sleeps until the next one.
        let mut state = self.shared.lock();
        if let Some(n) = state.armed.get_mut(&self.at) {
            *n -= 1;
            if *n == 0 {
                state.armed.remove(&self.at);
            }
        }
    }
}

fn run(shared: &Shared, engine: &EngineWeak) {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        let now = Instant::now();
        match state.armed.keys().next().copied() {
            None => {
                state.target = None;
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            Some(at) if at > now => {
                state.target = Some(at);
                state = shared
                    .wake
                    .wait_timeout(state, at - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            Some(_) => {
                // Due: the calls that armed these deadlines are cut off by their stores'
                // callbacks; their guards remove them when the calls end. Until then they
                // are not due again.
                let due: Vec<Instant> = state.armed.range(..=now).map(|(at, _)| *at).collect();
                for at in due {
                    state.armed.remove(&at);
                }
                state.advanced += 1;
                drop(state);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
                state = shared.lock();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn advances_only_when_an_armed_deadline_comes() {
        let engine = Engine::default();
        let thread = DeadlineClock::start(&engine).unwrap();
        let clock = thread.deadlines();
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(clock.advanced(), 0, "nothing armed, nothing advanced");

        // Armed and disarmed before it comes: never advances.
        let guard = clock.arm(Instant::now() + Duration::from_millis(60));
        drop(guard);
        assert_eq!(clock.armed(), 0);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(clock.advanced(), 0, "a disarmed deadline does not advance");

        // Armed past its time: advances once, at about its time.
        let start = Instant::now();
        let _late = clock.arm(start + Duration::from_millis(300));
        let _guard = clock.arm(start + Duration::from_millis(50));
        wait_until("the first deadline advances the epoch", || {
            clock.advanced() == 1
        });
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_millis(250),
            "advanced after {took:?}"
        );
        // An earlier deadline armed while the thread sleeps towards a later one wakes it.
        let start = Instant::now();
        let _early = clock.arm(start + Duration::from_millis(20));
        wait_until("an earlier deadline advances first", || {
            clock.advanced() == 2
        });
        assert!(start.elapsed() < Duration::from_millis(200));
        wait_until("the later deadline advances too", || clock.advanced() == 3);
    }

    #[test]
    fn the_thread_ends_with_the_clock() {
        let engine = Engine::default();
        let clock = DeadlineClock::start(&engine).unwrap();
        let shared = Arc::downgrade(&clock.deadlines.shared);
        drop(clock);
        wait_until("the thread lets go of the shared state", || {
            shared.upgrade().is_none()
        });
    }
}
