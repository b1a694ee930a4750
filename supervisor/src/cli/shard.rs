//! Shards: which part of a batch this run is, given on the command line or by the cluster
//! engine running it (a Slurm job array, a Kubernetes Indexed Job). Tasks are assigned by a
//! stable hash of their id ([`shared::hash::shard_of`]), so adding tasks never moves others.

use std::path::{Path, PathBuf};

/// This run's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// From 0.
    pub k: u32,
    /// How many.
    pub n: u32,
    /// Where it came from, for the log.
    pub source: String,
}

/// Why a shard could not be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// `--shard` not written as `K/N`.
    #[error("'{0}' is not K/N (e.g. 0/4)")]
    NotKOfN(String),
    /// K or N not a number.
    #[error("'{part}' in '{text}' is not a shard {what}")]
    NotNumber {
        /// The part that is not.
        part: String,
        /// The whole text.
        text: String,
        /// `number` or `count`.
        what: &'static str,
    },
    /// No shards at all.
    #[error("the shard count must be at least 1")]
    NoShards,
    /// K out of range.
    #[error("shard {k} of {n} does not exist: shards count from 0 to {}", n - 1)]
    NoSuchShard {
        /// The shard.
        k: u32,
        /// The count.
        n: u32,
    },
    /// An engine's variable that is not a number.
    #[error("{name}={value} is not a number")]
    BadVariable {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
    },
    /// A Slurm array task below the array's first index.
    #[error("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}")]
    BelowArrayMin {
        /// The task's index.
        id: u32,
        /// The array's first index.
        min: u32,
    },
    /// An index without a count.
    #[error("{0} is set but the shard count is not: give --shards N (or --shard K/N){hint}", hint = count_hint(.0))]
    NoCount(&'static str),
    /// `--shards` with nothing to say which shard this is.
    #[error("--shards needs a shard index: --shard K/N, a Slurm array, or JOB_COMPLETION_INDEX")]
    NoIndex,
}

fn count_hint(variable: &str) -> &'static str {
    if variable == "JOB_COMPLETION_INDEX" {
        " (Kubernetes does not export the count)"
    } else {
        " (SLURM_ARRAY_TASK_COUNT is not set)"
    }
}

/// Parses `K/N`.
pub fn parse_shard(s: &str) -> Result<(u32, u32), ShardError> {
    let (k, n) = s.split_once('/').ok_or_else(|| ShardError::NotKOfN(s.into()))?;
    let number = |part: &str, what| {
        part.trim().parse::<u32>().map_err(|_| ShardError::NotNumber { part: part.into(), text: s.into(), what })
    };
    let (k, n) = (number(k, "number")?, number(n, "count")?);
    check(k, n)?;
    Ok((k, n))
}

fn check(k: u32, n: u32) -> Result<(), ShardError> {
    if n == 0 {
        return Err(ShardError::NoShards);
    }
    if k >= n {
        return Err(ShardError::NoSuchShard { k, n });
    }
    Ok(())
}

/// The shard to run: `--shard`, else the Slurm array's task, else Kubernetes' completion index
/// with `--shards`; `None` for the whole batch. `env` reads the environment.
pub fn resolve(
    shard: Option<(u32, u32)>,
    shards: Option<u32>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Shard>, ShardError> {
    if let Some((k, n)) = shard {
        return Ok(Some(Shard { k, n, source: "--shard".into() }));
    }
    let num = |name: &str| -> Result<Option<u32>, ShardError> {
        match env(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| ShardError::BadVariable { name: name.into(), value: v }),
        }
    };
    if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        // Arrays may start anywhere (--array=1-4); shards count from 0.
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let k = id.checked_sub(min).ok_or(ShardError::BelowArrayMin { id, min })?;
        // Without a count (an old Slurm), running the whole batch in every array task would
        // run each task once per array task: refuse instead.
        let count = num("SLURM_ARRAY_TASK_COUNT")?;
        let n = shards.or(count).ok_or(ShardError::NoCount("SLURM_ARRAY_TASK_ID"))?;
        check(k, n)?;
        let of = count.map_or_else(|| format!("--shards {n}"), |c| c.to_string());
        return Ok(Some(Shard { k, n, source: format!("SLURM_ARRAY_TASK_ID={id} of {of}") }));
    }
    if let Some(k) = num("JOB_COMPLETION_INDEX")? {
        let n = shards.ok_or(ShardError::NoCount("JOB_COMPLETION_INDEX"))?;
        check(k, n)?;
        return Ok(Some(Shard { k, n, source: format!("JOB_COMPLETION_INDEX={k}") }));
    }
    if shards.is_some() {
        return Err(ShardError::NoIndex);
    }
    Ok(None)
}

/// Replaces `{shard}` in a path with the shard number.
pub fn fill(path: &Path, k: u32) -> PathBuf {
    PathBuf::from(path.to_string_lossy().replace("{shard}", &k.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn shards_come_from_the_flag_or_the_engine() {
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert!(parse_shard("4/4").unwrap_err().to_string().contains("count from 0 to 3"));
        assert!(parse_shard("x").is_err());
        let none = env(&[]);
        assert_eq!(resolve(None, None, &none), Ok(None));
        assert_eq!(resolve(Some((2, 3)), None, &none).unwrap().unwrap().k, 2);
        let slurm =
            env(&[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "1")]);
        let s = resolve(None, None, &slurm).unwrap().unwrap();
        assert_eq!((s.k, s.n), (2, 4));
        let countless = env(&[("SLURM_ARRAY_TASK_ID", "1")]);
        assert!(resolve(None, None, &countless).unwrap_err().to_string().contains("SLURM_ARRAY_TASK_COUNT is not"));
        assert_eq!(resolve(None, Some(3), &countless).unwrap().unwrap().n, 3);
        let k8s = env(&[("JOB_COMPLETION_INDEX", "5")]);
        assert!(resolve(None, None, &k8s).unwrap_err().to_string().contains("--shards"));
        assert_eq!(resolve(None, Some(8), &k8s).unwrap().unwrap().k, 5);
        assert!(resolve(None, Some(4), &k8s).is_err());
        assert_eq!(fill(Path::new("out/results-{shard}.jsonl"), 3), PathBuf::from("out/results-3.jsonl"));
    }
}
