//! The supervisor with real child processes under `sh -c`: a web dyno up
//! once it binds `PORT`, its output read line by line, crash restarts with
//! a cool-off, R10 (never binds), R12 (ignores SIGTERM), and a restart.
//! Timers are short and configurable; nothing sleeps to synchronise.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynos::{supervise, Control, DynoSpec, Event, Sink, State, Timers};
use tokio::sync::{watch, Notify};

#[path = "../../tests/support/wait.rs"]
mod wait;

/// Everything a dyno reported, in order.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    more: Notify,
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Line(String),
    Event(Event),
}

impl Sink for Recorder {
    fn line(&self, _dyno: &str, line: &str) {
        self.seen
            .lock()
            .expect("lock")
            .push(Seen::Line(line.to_string()));
        self.more.notify_waiters();
    }
    fn event(&self, _dyno: &str, event: Event) {
        self.seen.lock().expect("lock").push(Seen::Event(event));
        self.more.notify_waiters();
    }
}

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|s| match s {
                Seen::Event(e) => Some(e.clone()),
                Seen::Line(_) => None,
            })
            .collect()
    }

    fn lines(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|s| match s {
                Seen::Line(l) => Some(l.clone()),
                Seen::Event(_) => None,
            })
            .collect()
    }

    /// Waits until `check` holds of what was seen.
    async fn until(&self, what: &str, check: impl Fn(&[Seen]) -> bool) {
        let deadline = tokio::time::Instant::now() + wait::patience();
        loop {
            let notified = self.more.notified();
            if check(&self.seen.lock().expect("lock")) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "{what}: not seen in time; saw {:?}",
                    self.seen.lock().expect("lock")
                );
            }
        }
    }
}

fn changed(from: State, to: State) -> Seen {
    Seen::Event(Event::Changed { from, to })
}

fn timers() -> Timers {
    Timers {
        boot_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(30),
        probe_interval: Duration::from_millis(20),
        backoff_first: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        backoff_reset: Duration::from_secs(600),
        cycle: None,
    }
}

fn spec(name: &str, command: String, port: Option<u16>) -> DynoSpec {
    DynoSpec {
        name: name.into(),
        command,
        dir: std::env::temp_dir(),
        env: vec![("GREETING".into(), "hello".into())],
        port,
    }
}

/// Starts supervising; returns the control sender and the task.
fn start(
    spec: DynoSpec,
    timers: Timers,
    sink: Arc<Recorder>,
) -> (watch::Sender<Control>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Control::Run { restarts: 0 });
    let task = tokio::spawn(supervise(spec, timers, rx, sink));
    (tx, task)
}

/// A web process: this very test binary, running [`fake_web_dyno`].
fn web_command() -> String {
    let exe = std::env::current_exe().expect("test binary");
    format!(
        "exec '{}' --ignored --exact fake_web_dyno --nocapture --test-threads 1",
        exe.display()
    )
}

/// A port below the kernel's ephemeral range, for the dyno to bind (the
/// test never binds it: the dyno does, as on Heroku).
fn some_port() -> u16 {
    20_000 + (std::process::id() % 5_000) as u16 + (rand_u16() % 5_000)
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos % 65_536) as u16
}

#[test]
#[ignore = "the fake web dyno that the other tests run as a child"]
fn fake_web_dyno() {
    let Ok(port) = std::env::var("PORT") else {
        return;
    };
    let dyno = std::env::var("DYNO").unwrap_or_default();
    let greeting = std::env::var("GREETING").unwrap_or_default();
    println!("booting {dyno} on port {port}, GREETING={greeting}");
    let port: u16 = port.parse().expect("PORT is a number");
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind PORT");
    for conn in listener.incoming() {
        drop(conn);
    }
}

#[tokio::test]
async fn a_web_dyno_is_up_once_it_binds_its_port_then_stops_with_sigterm() {
    let sink = Arc::new(Recorder::default());
    let port = some_port();
    let (control, task) = start(
        spec("web.1", web_command(), Some(port)),
        timers(),
        sink.clone(),
    );
    sink.until("up", |s| s.contains(&changed(State::Starting, State::Up)))
        .await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "up means the port accepts"
    );
    sink.until("its output", |s| {
        s.iter()
            .any(|l| matches!(l, Seen::Line(l) if l.contains("booting web.1")))
    })
    .await;
    // The harness prints its own `test … ` before the dyno's line.
    assert!(sink
        .lines()
        .iter()
        .any(|l| l.ends_with(&format!("booting web.1 on port {port}, GREETING=hello"))));

    control.send_replace(Control::Stop);
    task.await.expect("the supervisor ends");
    let events = sink.events();
    assert!(matches!(events[0], Event::Launched { .. }), "{events:?}");
    assert_eq!(
        events[1..],
        [
            Event::Changed {
                from: State::Starting,
                to: State::Up
            },
            Event::Stopping,
            Event::Exited { status: 143 },
            Event::Changed {
                from: State::Up,
                to: State::Down
            },
        ]
    );
}

#[tokio::test]
async fn crashes_restart_at_once_then_after_a_growing_cool_off() {
    let sink = Arc::new(Recorder::default());
    let command = "echo working as $DYNO; exit 3".to_string();
    let (control, task) = start(spec("worker.1", command, None), timers(), sink.clone());
    sink.until("four launches", |s| {
        s.iter()
            .filter(|e| matches!(e, Seen::Event(Event::Launched { .. })))
            .count()
            >= 4
    })
    .await;
    control.send_replace(Control::Stop);
    task.await.expect("the supervisor ends");
    let waits: Vec<Duration> = sink
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::CoolingOff { wait } => Some(*wait),
            _ => None,
        })
        .collect();
    // The first crash restarts at once; the next ones wait 50, 100, 200 ms.
    assert_eq!(
        waits[..2],
        [Duration::from_millis(50), Duration::from_millis(100)]
    );
    assert!(sink.events().contains(&Event::Exited { status: 3 }));
    assert!(sink.lines().iter().any(|l| l == "working as worker.1"));
    assert!(
        matches!(
            sink.events().last(),
            Some(Event::Changed {
                to: State::Down,
                ..
            })
        ),
        "{:?}",
        sink.events()
    );
}

#[tokio::test]
async fn a_web_dyno_that_never_binds_is_killed_at_the_boot_timeout() {
    let sink = Arc::new(Recorder::default());
    let timers = Timers {
        boot_timeout: Duration::from_millis(300),
        ..timers()
    };
    let (control, task) = start(
        spec(
            "web.1",
            "echo never binding; exec sleep 30".into(),
            Some(some_port()),
        ),
        timers,
        sink.clone(),
    );
    sink.until("R10", |s| {
        s.iter()
            .any(|e| matches!(e, Seen::Event(Event::BootTimeout { .. })))
    })
    .await;
    sink.until("crashed", |s| {
        s.contains(&changed(State::Starting, State::Crashed))
    })
    .await;
    control.send_replace(Control::Stop);
    task.await.expect("the supervisor ends");
    let events = sink.events();
    let r10 = events
        .iter()
        .position(|e| matches!(e, Event::BootTimeout { .. }))
        .expect("R10");
    assert_eq!(events[r10 + 1], Event::Exited { status: 137 }, "killed");
    assert!(!events.contains(&Event::Changed {
        from: State::Starting,
        to: State::Up
    }));
}

#[tokio::test]
async fn a_dyno_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let sink = Arc::new(Recorder::default());
    let timers = Timers {
        stop_grace: Duration::from_millis(300),
        ..timers()
    };
    let command = "trap '' TERM; echo ready; while :; do sleep 0.05; done".to_string();
    let (control, task) = start(spec("worker.1", command, None), timers, sink.clone());
    sink.until("ready", |s| s.contains(&Seen::Line("ready".into())))
        .await;
    control.send_replace(Control::Stop);
    task.await.expect("the supervisor ends");
    let events = sink.events();
    let n = events.len();
    assert_eq!(
        events[n - 4..],
        [
            Event::Stopping,
            Event::ExitTimeout { seconds: 0 },
            Event::Exited { status: 137 },
            Event::Changed {
                from: State::Up,
                to: State::Down
            },
        ]
    );
}

#[tokio::test]
async fn a_restart_stops_the_dyno_and_starts_it_again_at_once() {
    let sink = Arc::new(Recorder::default());
    let command = "echo started; exec sleep 30".to_string();
    let (control, task) = start(spec("worker.1", command, None), timers(), sink.clone());
    sink.until("started", |s| s.contains(&Seen::Line("started".into())))
        .await;
    control.send_replace(Control::Run { restarts: 1 });
    sink.until("up again", |s| {
        s.iter()
            .filter(|e| **e == changed(State::Starting, State::Up))
            .count()
            == 2
    })
    .await;
    control.send_replace(Control::Stop);
    task.await.expect("the supervisor ends");
    let events: Vec<Event> = sink
        .events()
        .into_iter()
        .filter(|e| !matches!(e, Event::Launched { .. }))
        .collect();
    assert_eq!(
        events[..6],
        [
            Event::Changed {
                from: State::Starting,
                to: State::Up
            },
            Event::Stopping,
            Event::Exited { status: 143 },
            Event::Changed {
                from: State::Up,
                to: State::Down
            },
            Event::Changed {
                from: State::Down,
                to: State::Starting
            },
            Event::Changed {
                from: State::Starting,
                to: State::Up
            },
        ]
    );
}

#[tokio::test]
async fn what_a_crashed_main_process_leaves_behind_is_killed_before_the_restart() {
    let sink = Arc::new(Recorder::default());
    // The main process exits at once; its background child would live on.
    let command = "sleep 30 & echo left $!; exit 2".to_string();
    let (control, task) = start(spec("worker.1", command, None), timers(), sink.clone());
    sink.until("the crash", |s| {
        s.contains(&Seen::Event(Event::Exited { status: 2 }))
    })
    .await;
    let pid: u32 = sink
        .lines()
        .iter()
        .find_map(|l| l.strip_prefix("left ").and_then(|p| p.parse().ok()))
        .expect("the child's pid");
    // `Exited` is reported once nothing of the group is left.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the background child {pid} was killed"
    );
    control.send_replace(Control::Stop);
    task.await.expect("the supervisor ends");
}

#[tokio::test]
async fn a_child_that_outlives_sigterm_is_killed_after_the_grace_period() {
    let sink = Arc::new(Recorder::default());
    let timers = Timers {
        stop_grace: Duration::from_millis(300),
        ..timers()
    };
    // The shell exits on SIGTERM; the subshell it started ignores it.
    let command = "(trap '' TERM; while :; do sleep 0.05; done) & echo ready; wait".to_string();
    let (control, task) = start(spec("worker.1", command, None), timers, sink.clone());
    sink.until("ready", |s| s.contains(&Seen::Line("ready".into())))
        .await;
    control.send_replace(Control::Stop);
    task.await.expect("the supervisor ends");
    let events = sink.events();
    assert!(
        events.contains(&Event::ExitTimeout { seconds: 0 }),
        "R12 for the survivor: {events:?}"
    );
}

#[tokio::test]
async fn a_dyno_is_cycled_after_its_period() {
    let sink = Arc::new(Recorder::default());
    let timers = Timers {
        cycle: Some(Duration::from_millis(200)),
        ..timers()
    };
    let command = "echo started; exec sleep 30".to_string();
    let (control, task) = start(spec("worker.1", command, None), timers, sink.clone());
    sink.until("cycled and up again", |s| {
        s.contains(&Seen::Event(Event::Cycling))
            && s.iter()
                .filter(|e| **e == changed(State::Starting, State::Up))
                .count()
                >= 2
    })
    .await;
    control.send_replace(Control::Stop);
    task.await.expect("the supervisor ends");
    let events = sink.events();
    let cycling = events
        .iter()
        .position(|e| *e == Event::Cycling)
        .expect("cycling");
    assert_eq!(
        events[cycling + 1..cycling + 4],
        [
            Event::Stopping,
            Event::Exited { status: 143 },
            Event::Changed {
                from: State::Up,
                to: State::Down
            },
        ]
    );
}
