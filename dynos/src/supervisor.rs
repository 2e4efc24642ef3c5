//! One dyno's process, from launch to stop.
//!
//! ```text
//!            launch                 port accepts            exits
//!   ───────▶ starting ─────────────────────────▶ up ─────────────▶ crashed
//!              │  exits, or no bind in boot_timeout (R10)            │
//!              └───────────────────────────────────▶ crashed ◀───────┘
//!   crashed ── cool-off (Backoff) ──▶ launch again
//!   any ── Stop / Restart / daily cycle: SIGTERM to the group, SIGKILL after stop_grace (R12) ──▶ down
//! ```
//!
//! The command runs under `sh -c` in its own process group, so SIGTERM and
//! SIGKILL reach every process of the dyno (a shell and its children), as
//! Heroku's "Stopping all processes" does. A dyno that is not a web dyno
//! (no port) is up as soon as it is launched.

use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::Pid;
use tokio::io::AsyncRead;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::backoff::Backoff;
use crate::event::{Event, State};
use crate::spec::{DynoSpec, Timers};

/// Longest line read from a dyno's output; longer ones are cut there.
const MAX_LINE: usize = 10_000;

/// Where a dyno's output lines and life-cycle events go (the app's log
/// stream and the routing table, for the manager).
pub trait Sink: Send + Sync + 'static {
    /// One line of the dyno's stdout or stderr, without its newline.
    fn line(&self, dyno: &str, line: &str);
    /// A life-cycle event.
    fn event(&self, dyno: &str, event: Event);
}

/// What the manager wants of a supervised dyno (sent on a watch channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep it running; each increase of `restarts` asks for one restart
    /// (stop, then start again at once, cool-off forgotten).
    Run {
        /// Restarts asked for so far.
        restarts: u64,
    },
    /// Stop it and end the supervisor.
    Stop,
}

/// How a running phase ended.
enum Ended {
    /// The process exited on its own.
    Exited(ExitStatus),
    /// It did not bind its port within the boot timeout.
    BootTimeout,
    /// The manager asked for a restart.
    Restart,
    /// The manager asked it to stop.
    Stop,
    /// Its daily cycle came.
    Cycle,
}

/// Runs `spec` until [`Control::Stop`] (or until `control`'s sender is
/// gone), reporting to `sink`.
pub async fn supervise(
    spec: DynoSpec,
    timers: Timers,
    mut control: watch::Receiver<Control>,
    sink: Arc<dyn Sink>,
) {
    let mut backoff = Backoff::new(timers);
    let mut state: Option<State> = None;
    let mut restarts = match *control.borrow_and_update() {
        Control::Run { restarts } => restarts,
        Control::Stop => return,
    };
    let change = |state: &mut Option<State>, to: State| {
        if let Some(from) = *state {
            if from != to {
                sink.event(&spec.name, Event::Changed { from, to });
            }
        }
        *state = Some(to);
    };
    loop {
        // Heroku's order: "State changed from crashed to starting", then
        // "Starting process with command …".
        change(&mut state, State::Starting);
        let mut child = match launch(&spec, &sink) {
            Ok(child) => child,
            Err(e) => {
                tracing::warn!(dyno = %spec.name, error = %e, "cannot launch the dyno's command");
                sink.line(&spec.name, &format!("cannot start `{}`: {e}", spec.command));
                change(&mut state, State::Crashed);
                if cool_off(
                    &mut backoff,
                    Duration::ZERO,
                    &mut control,
                    &mut restarts,
                    &spec,
                    &sink,
                )
                .await
                {
                    change(&mut state, State::Down);
                    return;
                }
                continue;
            }
        };
        let launched = Instant::now();
        let group = group_of(&child);
        let mut ended = match spec.port {
            Some(port) => boot(&mut child, port, &timers, &mut control, &mut restarts).await,
            None => None,
        };
        if ended.is_none() {
            change(&mut state, State::Up);
            let cycle_at = timers.cycle.map(|c| launched + cycle_after(c));
            ended = Some(run(&mut child, &mut control, &mut restarts, cycle_at).await);
        }
        let status = match ended {
            Some(Ended::Exited(status)) => status,
            Some(Ended::BootTimeout) => {
                sink.event(
                    &spec.name,
                    Event::BootTimeout {
                        seconds: timers.boot_timeout.as_secs(),
                    },
                );
                signal_group(group, rustix::process::Signal::KILL);
                child.wait().await.unwrap_or_default()
            }
            Some(Ended::Restart | Ended::Stop | Ended::Cycle) | None => {
                if matches!(ended, Some(Ended::Cycle)) {
                    sink.event(&spec.name, Event::Cycling);
                }
                let status = stop(&mut child, group, &timers, &spec, &sink).await;
                sink.event(
                    &spec.name,
                    Event::Exited {
                        status: code(status),
                    },
                );
                change(&mut state, State::Down);
                if matches!(*control.borrow(), Control::Stop) {
                    return;
                }
                backoff.reset();
                continue;
            }
        };
        // What the main process left behind goes with it, as on Heroku:
        // nothing of the old dyno may hold its port when it starts again.
        signal_group(group, rustix::process::Signal::KILL);
        gone(group, Duration::from_secs(1)).await;
        sink.event(
            &spec.name,
            Event::Exited {
                status: code(status),
            },
        );
        change(&mut state, State::Crashed);
        if cool_off(
            &mut backoff,
            launched.elapsed(),
            &mut control,
            &mut restarts,
            &spec,
            &sink,
        )
        .await
        {
            change(&mut state, State::Down);
            return;
        }
    }
}

/// Starts the command with `PORT`, `DYNO` and the spec's environment, its
/// output read line by line into `sink`.
fn launch(spec: &DynoSpec, sink: &Arc<dyn Sink>) -> std::io::Result<Child> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.dir)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("DYNO", &spec.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(port) = spec.port {
        cmd.env("PORT", port.to_string());
    }
    let mut child = cmd.spawn()?;
    sink.event(
        &spec.name,
        Event::Launched {
            command: spec.command.clone(),
            pid: child.id().unwrap_or_default(),
        },
    );
    if let Some(out) = child.stdout.take() {
        tokio::spawn(read_lines(out, spec.name.clone(), sink.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(read_lines(err, spec.name.clone(), sink.clone()));
    }
    Ok(child)
}

async fn read_lines(out: impl AsyncRead + Unpin, dyno: String, sink: Arc<dyn Sink>) {
    use futures_util::StreamExt as _;
    let mut lines = FramedRead::new(out, LinesCodec::new_with_max_length(MAX_LINE));
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => sink.line(&dyno, &line),
            // An over-long line is skipped to its end; the stream goes on.
            Err(tokio_util::codec::LinesCodecError::MaxLineLengthExceeded) => {}
            Err(tokio_util::codec::LinesCodecError::Io(_)) => return,
        }
    }
}

/// Waits until the port accepts a connection (`None`), or for how booting
/// ended otherwise.
async fn boot(
    child: &mut Child,
    port: u16,
    timers: &Timers,
    control: &mut watch::Receiver<Control>,
    restarts: &mut u64,
) -> Option<Ended> {
    let deadline = tokio::time::sleep(timers.boot_timeout);
    tokio::pin!(deadline);
    let mut probe = tokio::time::interval(timers.probe_interval);
    loop {
        tokio::select! {
            status = child.wait() => return Some(Ended::Exited(status.unwrap_or_default())),
            _ = &mut deadline => return Some(Ended::BootTimeout),
            asked = asked(control, restarts) => return Some(asked),
            _ = probe.tick() => {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return None;
                }
            }
        }
    }
}

/// Runs until the process exits or the manager asks for something.
async fn run(
    child: &mut Child,
    control: &mut watch::Receiver<Control>,
    restarts: &mut u64,
    cycle_at: Option<Instant>,
) -> Ended {
    let cycle = async {
        match cycle_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = child.wait() => Ended::Exited(status.unwrap_or_default()),
        asked = asked(control, restarts) => asked,
        _ = cycle => Ended::Cycle,
    }
}

/// The cycle period plus up to 15 % more at random (Heroku: 24 h plus up
/// to 216 minutes), so the dynos of one app do not cycle together.
fn cycle_after(cycle: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    cycle + cycle.mul_f64(0.15 * (nanos % 1_000) as f64 / 1_000.0)
}

/// Resolves when the manager asks for a restart or a stop (a gone manager
/// is a stop).
async fn asked(control: &mut watch::Receiver<Control>, restarts: &mut u64) -> Ended {
    loop {
        if control.changed().await.is_err() {
            return Ended::Stop;
        }
        match *control.borrow_and_update() {
            Control::Stop => return Ended::Stop,
            Control::Run { restarts: r } if r > *restarts => {
                *restarts = r;
                return Ended::Restart;
            }
            Control::Run { .. } => {}
        }
    }
}

/// Waits out a crashed dyno's cool-off; true when it is to stay down.
async fn cool_off(
    backoff: &mut Backoff,
    ran: Duration,
    control: &mut watch::Receiver<Control>,
    restarts: &mut u64,
    spec: &DynoSpec,
    sink: &Arc<dyn Sink>,
) -> bool {
    let wait = backoff.crashed(ran);
    if !wait.is_zero() {
        sink.event(&spec.name, Event::CoolingOff { wait });
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        asked = asked(control, restarts) => match asked {
            Ended::Restart => {
                backoff.reset();
                false
            }
            _ => true,
        },
    }
}

/// SIGTERM to the dyno's processes, SIGKILL after the grace period (R12)
/// to whatever is left of the group, the main process or not.
async fn stop(
    child: &mut Child,
    group: Option<Pid>,
    timers: &Timers,
    spec: &DynoSpec,
    sink: &Arc<dyn Sink>,
) -> ExitStatus {
    sink.event(&spec.name, Event::Stopping);
    signal_group(group, rustix::process::Signal::TERM);
    let deadline = Instant::now() + timers.stop_grace;
    let status = tokio::time::timeout_at(deadline, child.wait()).await;
    let all_gone = status.is_ok() && gone(group, deadline - Instant::now()).await;
    if !all_gone {
        sink.event(
            &spec.name,
            Event::ExitTimeout {
                seconds: timers.stop_grace.as_secs(),
            },
        );
        signal_group(group, rustix::process::Signal::KILL);
        gone(group, Duration::from_secs(1)).await;
    }
    match status {
        Ok(status) => status.unwrap_or_default(),
        Err(_) => child.wait().await.unwrap_or_default(),
    }
}

/// The dyno's process group (its main process leads it, see [`launch`]).
fn group_of(child: &Child) -> Option<Pid> {
    child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw)
}

/// Signals every process of the dyno's group.
fn signal_group(group: Option<Pid>, signal: rustix::process::Signal) {
    if let Some(pid) = group {
        if let Err(e) = rustix::process::kill_process_group(pid, signal) {
            tracing::debug!(error = %e, "signal to a dyno's process group");
        }
    }
}

/// Waits up to `within` until no process of the group is left; true when
/// none is.
async fn gone(group: Option<Pid>, within: Duration) -> bool {
    let Some(pid) = group else { return true };
    let deadline = Instant::now() + within;
    loop {
        if rustix::process::test_kill_process_group(pid).is_err() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An exit status as a shell reports it: the code, or 128 + the signal.
fn code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}
