//! Thread priority: the request path ahead of the process's other work.
//!
//! `switchyard serve` runs the router, logplex and the control plane in
//! one process. Under a scheduler that shares the CPU between processes
//! (or cgroups) first and threads second, as Linux does with autogroups
//! and systemd slices, every thread of the process draws on one share:
//! the logplex threads' fan-out of router lines to tails and drains then
//! comes straight out of the router threads' time. The runtime's threads
//! therefore run `--background-nice` below the router threads, which are
//! started from the main thread and keep the process's own priority.
//! Logs are not lost for it: they wait in bounded buffers and what a full
//! buffer turns away is counted and reported (L10).
//!
//! Linux keeps a nice value per thread (`setpriority(PRIO_PROCESS, tid)`),
//! and a thread inherits its creator's; elsewhere this does nothing.

/// Raises the calling thread's nice value by `by` (lowering its priority);
/// 0 leaves it. A failure is logged, not fatal: the thread runs as it was.
pub fn lower_this_thread(by: u8) {
    if by == 0 {
        return;
    }
    if let Err(e) = lower(by) {
        tracing::warn!(error = %e, by, "cannot lower a background thread's priority");
    }
}

#[cfg(target_os = "linux")]
fn lower(by: u8) -> std::io::Result<()> {
    use rustix::process::{getpriority_process, setpriority_process};
    let tid = Some(rustix::thread::gettid());
    let now = getpriority_process(tid)?;
    setpriority_process(tid, (now + i32::from(by)).min(19))?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn lower(_by: u8) -> std::io::Result<()> {
    Ok(())
}

/// The calling thread's nice value (Linux), for tests and diagnostics.
#[cfg(all(test, target_os = "linux"))]
fn nice_of_this_thread() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("getpriority")
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = nice_of_this_thread();
        let lowered = std::thread::spawn(|| {
            let start = nice_of_this_thread();
            lower_this_thread(3);
            let after = nice_of_this_thread();
            // A thread it starts inherits the lowered value.
            let child = std::thread::spawn(nice_of_this_thread)
                .join()
                .expect("child");
            (start, after, child)
        })
        .join()
        .expect("thread");
        assert_eq!(lowered.0, before);
        assert_eq!(lowered.1, (before + 3).min(19));
        assert_eq!(lowered.2, lowered.1);
        assert_eq!(
            nice_of_this_thread(),
            before,
            "the caller's own value moved"
        );
    }

    #[test]
    fn zero_leaves_the_thread_alone() {
        let before = nice_of_this_thread();
        let after = std::thread::spawn(|| {
            lower_this_thread(0);
            nice_of_this_thread()
        })
        .join()
        .expect("thread");
        assert_eq!(after, before);
    }
}
