//! `--halt`: the rule that stops a run early, as GNU parallel's: when (`now` or `soon`), on
//! what (`fail`, `success`, `done`) and how many (a count, or a percentage).

use std::fmt;

use super::Counts;

/// When a halt stops the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltWhen {
    /// Start nothing new; running tasks finish.
    Soon,
    /// Stop running tasks too; they are charged nothing and left for `--resume`.
    Now,
}

/// What a halt counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltOn {
    /// Tasks that ended failed or quarantined.
    Fail,
    /// Tasks that ended ok.
    Success,
    /// Tasks that ended, however.
    Done,
}

/// How many it takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HaltLimit {
    /// This many tasks.
    Count(u64),
    /// This percentage of the run's tasks (of those ended so far while the total is unknown).
    Percent(f64),
}

/// A halt rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Halt {
    /// When it stops the run.
    pub when: HaltWhen,
    /// What it counts.
    pub on: HaltOn,
    /// How many it takes.
    pub limit: HaltLimit,
}

/// A `--halt` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{given}' is not a halt rule ({why}); expected now|soon,fail|success|done=N or N%, e.g. soon,fail=1")]
pub struct HaltError {
    /// What was given.
    pub given: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Halt {
    /// Parses `now,fail=1`, `soon,success=50%`, `now,done=10`.
    pub fn parse(s: &str) -> Result<Self, HaltError> {
        let err = |why| HaltError { given: s.to_string(), why };
        let (when, rule) = s.split_once(',').ok_or_else(|| err("no comma"))?;
        let when = match when {
            "now" => HaltWhen::Now,
            "soon" => HaltWhen::Soon,
            _ => return Err(err("it starts with neither now nor soon")),
        };
        let (on, n) = rule.split_once('=').ok_or_else(|| err("no '='"))?;
        let on = match on {
            "fail" => HaltOn::Fail,
            "success" => HaltOn::Success,
            "done" => HaltOn::Done,
            _ => return Err(err("it counts neither fail, success nor done")),
        };
        let limit = match n.strip_suffix('%') {
            Some(p) => match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => HaltLimit::Percent(p),
                _ => return Err(err("the percentage is not above 0 and at most 100")),
            },
            None => match n.parse::<u64>() {
                Ok(n) if n > 0 => HaltLimit::Count(n),
                _ => return Err(err("the count is not a whole number above 0")),
            },
        };
        Ok(Self { when, on, limit })
    }

    /// Whether the run has reached the rule, with `counts` so far and `total` tasks in the run
    /// where known.
    pub fn reached(&self, counts: &Counts, total: Option<u64>) -> bool {
        let bad = counts.failed + counts.quarantined;
        let done = counts.ok + bad;
        let n = match self.on {
            HaltOn::Fail => bad,
            HaltOn::Success => counts.ok,
            HaltOn::Done => done,
        };
        match self.limit {
            HaltLimit::Count(c) => n >= c,
            HaltLimit::Percent(p) => {
                let of = total.unwrap_or(done);
                n > 0 && of > 0 && (n as f64) * 100.0 >= p * of as f64
            }
        }
    }
}

impl fmt::Display for Halt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = match self.when {
            HaltWhen::Now => "now",
            HaltWhen::Soon => "soon",
        };
        let on = match self.on {
            HaltOn::Fail => "fail",
            HaltOn::Success => "success",
            HaltOn::Done => "done",
        };
        match self.limit {
            HaltLimit::Count(n) => write!(f, "{when},{on}={n}"),
            HaltLimit::Percent(p) => write!(f, "{when},{on}={p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_are_reached() {
        let h = Halt::parse("soon,fail=2").unwrap();
        assert_eq!(h.to_string(), "soon,fail=2");
        let mut c = Counts { failed: 1, ..Counts::default() };
        assert!(!h.reached(&c, None));
        c.quarantined = 1;
        assert!(h.reached(&c, None));
        let p = Halt::parse("now,success=50%").unwrap();
        assert_eq!(p.when, HaltWhen::Now);
        let c = Counts { ok: 4, ..Counts::default() };
        assert!(!p.reached(&c, Some(10)));
        assert!(p.reached(&c, Some(8)));
        for bad in ["fail=1", "later,fail=1", "now,crash=1", "now,fail=0", "now,fail=x", "soon,done=101%"] {
            assert!(Halt::parse(bad).is_err(), "{bad}");
        }
    }
}
