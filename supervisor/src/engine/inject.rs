//! `--inject panic:0.02,segv:0.01`: random faults, decided per task attempt by a hash of the
//! seed, the task id and the attempt number. The same seed gives the same faults whatever
//! the order in which workers pick tasks up.

use std::fmt;
use std::str::FromStr;

use shared::hash::{mix64, stable_hash};
use shared::task::FaultKind;

/// A fault-injection plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Inject {
    rates: Vec<(FaultKind, f64)>,
    /// Makes the rolls reproducible.
    pub seed: u64,
}

/// A malformed `--inject` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// An entry is not `fault:probability`.
    #[error("'{0}' is not FAULT:PROBABILITY (e.g. segv:0.01)")]
    Shape(String),
    /// An unknown fault name.
    #[error(transparent)]
    Fault(#[from] shared::task::UnknownFault),
    /// A probability outside 0..=1, or probabilities summing above 1.
    #[error("probability '{0}' must be a number between 0 and 1 (all together at most 1)")]
    Probability(String),
}

impl Inject {
    /// Parses `fault:p,fault:p`.
    pub fn parse(spec: &str, seed: u64) -> Result<Self, InjectError> {
        let mut rates = Vec::new();
        let mut total = 0.0;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, p) = part.split_once(':').ok_or_else(|| InjectError::Shape(part.to_string()))?;
            let kind = FaultKind::from_str(name.trim())?;
            let p: f64 = p.trim().parse().map_err(|_| InjectError::Probability(p.to_string()))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(InjectError::Probability(p.to_string()));
            }
            total += p;
            if total > 1.0 + 1e-9 {
                return Err(InjectError::Probability(format!("{total} in total")));
            }
            rates.push((kind, p));
        }
        if rates.is_empty() {
            return Err(InjectError::Shape(spec.to_string()));
        }
        Ok(Self { rates, seed })
    }

    /// The fault, if any, for attempt `attempt` of task `id`.
    pub fn roll(&self, id: &str, attempt: u32) -> Option<FaultKind> {
        let h = mix64(self.seed ^ stable_hash(id.as_bytes()) ^ mix64(u64::from(attempt)));
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        let mut acc = 0.0;
        for &(kind, p) in &self.rates {
            acc += p;
            if u < acc {
                return Some(kind);
            }
        }
        None
    }
}

impl fmt::Display for Inject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.rates.iter().map(|(k, p)| format!("{k}:{p}")).collect();
        write!(f, "{}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_are_reproducible_and_near_their_rates() {
        let inj = Inject::parse("panic:0.02, segv:0.01", 42).unwrap();
        let mut panics = 0;
        let mut segvs = 0;
        for i in 0..100_000 {
            let id = format!("t{i}");
            let r = inj.roll(&id, 1);
            assert_eq!(r, inj.roll(&id, 1));
            match r {
                Some(FaultKind::Panic) => panics += 1,
                Some(FaultKind::Segv) => segvs += 1,
                _ => {}
            }
        }
        assert!((1700..2300).contains(&panics), "{panics}");
        assert!((800..1200).contains(&segvs), "{segvs}");
        assert!(Inject::parse("segfault:0.1", 1).is_err());
        assert!(Inject::parse("segv:1.5", 1).is_err());
        assert!(Inject::parse("segv:0.6,panic:0.6", 1).is_err());
        assert!(Inject::parse("segv", 1).is_err());
    }
}
