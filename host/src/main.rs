use clap::{CommandFactory, FromArgMatches};
use operator::cli::{self, Cli, subject_help};
use tracing_subscriber::EnvFilter;

/// A tick lifts, converts and stores thousands of small values and frees them again; with
/// glibc's malloc that churn cost about a sixth of a tick's CPU (perf of `tick_cost`'s
/// live subject).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    set_memory_return_delay();
    // One thread: a tick's work is one sequence of awaits, and on tokio's multi-threaded
    // runtime each of its requests hopped between threads, waking one per hop. One thread
    // cut `operator run`'s CPU per tick by about an eighth (`tick_cost`'s live subject) and
    // its threads from four to two. Blocking work (the store) is short; the compiler runs
    // in a child process (`plugin compile`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

/// mimalloc gives freed pages back to the system after a delay, and only when the thread
/// that freed them allocates again. Giving them back at once (delay 0), a monitor ticking
/// every second returned and faulted in again the same pages on every tick: page faults
/// and `madvise` were about 4% of `operator run`'s CPU (perf, `tick_cost`'s live subject),
/// 1.5% at 10 s. 10 s keeps a tick's pages for the next tick and still returns what a
/// spike (a large observation, a diagnosis) left behind; RSS after 30 ticks is about 1 MiB
/// above giving everything back at once. The compiler's threads, which never allocate
/// again, are not in this process: a first start compiles in a child (`plugin compile`).
fn set_memory_return_delay() {
    // `mi_option_purge_delay` in mimalloc's v3 option enum.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // The user's own setting wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets a tuning value; valid at any time, before any thread is started here.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// See [`set_memory_return_delay`].
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

async fn run() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let mut command = Cli::command();
    // CLI-01: `--help` next to a subject lists the settings that subject declares.
    if let Some((sub, source)) = subject_help::requested(&argv) {
        let extra = subject_help::help_for(source).await;
        command = command.mut_subcommand(sub, |c| c.after_help(extra));
    }
    let cli = match command
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("warning: bad --log filter `{}` ({e}); using info", cli.log);
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    cli::allow_self_exec();
    match cli::dispatch(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// Option 15 is mimalloc's purge delay (its default, 1000 ms in v3, tells it apart),
    /// and the operator sets it unless the user did.
    #[test]
    fn sets_the_purge_delay() {
        let get = || unsafe { libmimalloc_sys::mi_option_get(15) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            // The user's setting wins, and this test cannot tell the option apart.
            return;
        }
        assert_eq!(
            get(),
            1000,
            "option 15 is not the purge delay in this mimalloc"
        );
        super::set_memory_return_delay();
        assert_eq!(get(), super::PURGE_DELAY_MS);
    }
}
