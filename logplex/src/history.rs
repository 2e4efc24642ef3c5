//! A channel's history: a ring of the most recent lines (Heroku keeps 1500).

use std::collections::VecDeque;

use crate::message::LogLine;

/// The most recent `capacity` lines, oldest first.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    lines: VecDeque<LogLine>,
}

impl History {
    /// An empty history of `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            lines: VecDeque::with_capacity(capacity.min(4096)),
        }
    }

    /// Adds a line, forgetting the oldest when full.
    pub fn push(&mut self, line: LogLine) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() >= self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The last `n` lines that pass `keep`, oldest first.
    pub fn recent(&self, n: usize, keep: impl Fn(&LogLine) -> bool) -> Vec<LogLine> {
        let mut out: Vec<_> = self
            .lines
            .iter()
            .rev()
            .filter(|l| keep(l))
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Lines held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is held.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::PRI_APP;

    #[test]
    fn keeps_exactly_the_last_lines() {
        let mut h = History::new(1500);
        for i in 0..2000 {
            h.push(LogLine::now(PRI_APP, "app", "web.1", &i.to_string()));
        }
        assert_eq!(h.len(), 1500);
        let all = h.recent(5000, |_| true);
        assert_eq!(all.first().map(|l| l.msg()), Some("500"));
        assert_eq!(all.last().map(|l| l.msg()), Some("1999"));
        let last = h.recent(2, |_| true);
        assert_eq!(
            last.iter().map(|l| l.msg()).collect::<Vec<_>>(),
            ["1998", "1999"]
        );
    }
}
