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

/// Parses `K/N`.
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (k, n) = s.split_once('/').ok_or_else(|| format!("'{s}' is not K/N (e.g. 0/4)"))?;
    let k: u32 = k.trim().parse().map_err(|_| format!("'{k}' in '{s}' is not a shard number"))?;
    let n: u32 = n.trim().parse().map_err(|_| format!("'{n}' in '{s}' is not a shard count"))?;
    check(k, n)?;
    Ok((k, n))
}

fn check(k: u32, n: u32) -> Result<(), String> {
    if n == 0 {
        return Err("the shard count must be at least 1".into());
    }
    if k >= n {
        return Err(format!("shard {k} of {n} does not exist: shards count from 0 to {}", n - 1));
    }
    Ok(())
}

/// The shard to run: `--shard`, else the Slurm array's task, else Kubernetes' completion index
/// with `--shards`; `None` for the whole batch. `env` reads the environment.
pub fn resolve(
    shard: Option<(u32, u32)>,
    shards: Option<u32>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Shard>, String> {
    if let Some((k, n)) = shard {
        return Ok(Some(Shard { k, n, source: "--shard".into() }));
    }
    let num = |name: &str| -> Result<Option<u32>, String> {
        match env(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| format!("{name}={v} is not a number")),
        }
    };
    if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        // Arrays may start anywhere (--array=1-4); shards count from 0.
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let k = id
            .checked_sub(min)
            .ok_or_else(|| format!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"))?;
        // Without a count (an old Slurm), running the whole batch in every array task would
        // run each task once per array task: refuse instead.
        let count = num("SLURM_ARRAY_TASK_COUNT")?;
        let n = shards
            .or(count)
            .ok_or("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: give --shards N (or --shard K/N)")?;
        check(k, n)?;
        let of = count.map_or_else(|| format!("--shards {n}"), |c| c.to_string());
        return Ok(Some(Shard { k, n, source: format!("SLURM_ARRAY_TASK_ID={id} of {of}") }));
    }
    if let Some(k) = num("JOB_COMPLETION_INDEX")? {
        let n = shards.ok_or("JOB_COMPLETION_INDEX is set: give --shards N (Kubernetes does not export the count)")?;
        check(k, n)?;
        return Ok(Some(Shard { k, n, source: format!("JOB_COMPLETION_INDEX={k}") }));
    }
    if shards.is_some() {
        return Err("--shards needs a shard index: --shard K/N, a Slurm array, or JOB_COMPLETION_INDEX".into());
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
        assert!(parse_shard("4/4").unwrap_err().contains("count from 0 to 3"));
        assert!(parse_shard("x").is_err());
        let none = env(&[]);
        assert_eq!(resolve(None, None, &none), Ok(None));
        assert_eq!(resolve(Some((2, 3)), None, &none).unwrap().unwrap().k, 2);
        let slurm =
            env(&[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "1")]);
        let s = resolve(None, None, &slurm).unwrap().unwrap();
        assert_eq!((s.k, s.n), (2, 4));
        let countless = env(&[("SLURM_ARRAY_TASK_ID", "1")]);
        assert!(resolve(None, None, &countless).unwrap_err().contains("SLURM_ARRAY_TASK_COUNT is not"));
        assert_eq!(resolve(None, Some(3), &countless).unwrap().unwrap().n, 3);
        let k8s = env(&[("JOB_COMPLETION_INDEX", "5")]);
        assert!(resolve(None, None, &k8s).unwrap_err().contains("--shards"));
        assert_eq!(resolve(None, Some(8), &k8s).unwrap().unwrap().k, 5);
        assert!(resolve(None, Some(4), &k8s).is_err());
        assert_eq!(fill(Path::new("out/results-{shard}.jsonl"), 3), PathBuf::from("out/results-3.jsonl"));
    }
}
