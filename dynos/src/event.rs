//! A dyno's life cycle as events, and the line Heroku writes for each into
//! the app's stream (source `heroku`, process the dyno's name).

/// A dyno's state, as `heroku ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started, not yet bound to its port.
    Starting,
    /// Running (bound to its port, for a web dyno).
    Up,
    /// Exited on its own, or failed to boot; waiting to be started again.
    Crashed,
    /// Stopped on purpose.
    Down,
}

impl State {
    /// `starting`, `up`, `crashed`, `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Up => "up",
            State::Crashed => "crashed",
            State::Down => "down",
        }
    }
}

/// What happened to a dyno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The command was launched (`pid` is its process group).
    Launched {
        /// The command line.
        command: String,
        /// Its process id.
        pid: u32,
    },
    /// The state changed.
    Changed {
        /// Before.
        from: State,
        /// After.
        to: State,
    },
    /// A web process did not bind its port in time and was killed (R10).
    BootTimeout {
        /// The boot timeout, in seconds.
        seconds: u64,
    },
    /// The daily restart is due.
    Cycling,
    /// SIGTERM was sent to every process of the dyno.
    Stopping,
    /// A process did not exit within the grace period and was killed (R12).
    ExitTimeout {
        /// The grace period, in seconds.
        seconds: u64,
    },
    /// The process exited: its status code, or 128 + the signal that
    /// ended it, as a shell reports it.
    Exited {
        /// Exit status.
        status: i32,
    },
    /// A crashed dyno waits this long before it is started again.
    CoolingOff {
        /// The wait.
        wait: std::time::Duration,
    },
}

impl Event {
    /// The `heroku[<dyno>]:` line Heroku writes for this event, if any.
    pub fn heroku_line(&self) -> Option<String> {
        Some(match self {
            Event::Launched { command, .. } => format!("Starting process with command `{command}`"),
            Event::Changed { from, to } => {
                format!("State changed from {} to {}", from.as_str(), to.as_str())
            }
            Event::BootTimeout { seconds } => format!(
                "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within {seconds} seconds of launch"
            ),
            Event::Cycling => "Cycling".to_string(),
            Event::Stopping => "Stopping all processes with SIGTERM".to_string(),
            Event::ExitTimeout { seconds } => format!(
                "Error R12 (Exit timeout) -> At least one process failed to exit within {seconds} seconds of SIGTERM"
            ),
            Event::Exited { status } => format!("Process exited with status {status}"),
            Event::CoolingOff { .. } => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_are_herokus() {
        let lines: Vec<Option<String>> = [
            Event::Launched {
                command: "python server.py".into(),
                pid: 7,
            },
            Event::Changed {
                from: State::Starting,
                to: State::Up,
            },
            Event::BootTimeout { seconds: 60 },
            Event::Cycling,
            Event::Stopping,
            Event::ExitTimeout { seconds: 30 },
            Event::Exited { status: 143 },
            Event::CoolingOff {
                wait: std::time::Duration::from_secs(20),
            },
        ]
        .iter()
        .map(Event::heroku_line)
        .collect();
        assert_eq!(
            lines,
            [
                Some("Starting process with command `python server.py`".to_string()),
                Some("State changed from starting to up".to_string()),
                Some("Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 60 seconds of launch".to_string()),
                Some("Cycling".to_string()),
                Some("Stopping all processes with SIGTERM".to_string()),
                Some("Error R12 (Exit timeout) -> At least one process failed to exit within 30 seconds of SIGTERM".to_string()),
                Some("Process exited with status 143".to_string()),
                None,
            ]
        );
    }
}
