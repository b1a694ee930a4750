//! `bulkhead run --cmd CMD --pipepart FILE`: a command over line-aligned blocks of a file, as
//! GNU parallel's `--pipepart`. Blocks are planned as `scan` plans its ranges; each is a
//! `pipe` task whose worker reads its block from the file and feeds it to the command's
//! standard input, so the block never passes through the supervisor. Its output is shown as
//! a `--cmd` run's (each block's stdout and stderr grouped, `-k`, `--tag`, records only to
//! `--results` or with `--output records`); journal, resume and every pool option are `run`'s.

use shared::exit;
use shared::task::BuiltinTask;

use super::RunArgs;
use super::run::{check_outputs, command_pool, output_mode, pool_error, resolve_shard, show_run};
use super::scan::{offsets, plan_chunk, range_id, regular_file};
use crate::TaskSpec;

/// The replacement strings of `--cmd` that stand for an input line, which a block is not.
const LINE_STRINGS: [&str; 5] = ["{}", "{.}", "{/}", "{//}", "{/.}"];

pub(super) fn pipepart(mut args: RunArgs) -> i32 {
    let (Some(file), Some(template)) = (args.pipepart.clone(), args.cmd.clone()) else {
        eprintln!("bulkhead: error: --pipepart FILE needs --cmd CMD");
        return exit::BAD_INPUT;
    };
    if let Some(s) = LINE_STRINGS.iter().find(|s| template.contains(*s)) {
        eprintln!(
            "bulkhead: error: --cmd has {s}, which stands for an input line; with --pipepart the input is a block \
             on the command's standard input, and '{{#}}' (the block number) is the one replacement string"
        );
        return exit::BAD_INPUT;
    }
    if args.block == Some(0) {
        eprintln!("bulkhead: error: --block must be at least 1 byte");
        return exit::BAD_INPUT;
    }
    let shard = match resolve_shard(&mut args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(code) = check_outputs(&args, &[file.as_path()]) {
        return code;
    }
    let meta = match regular_file(&file, "--pipepart plans blocks", "the command with it as its input") {
        Ok(m) => m,
        Err(code) => return code,
    };
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let len = plan_chunk(args.block, meta.len(), workers, false);
    let path = file.to_string_lossy().into_owned();
    let tasks: Vec<TaskSpec<BuiltinTask>> = offsets(meta.len(), len)
        .enumerate()
        .map(|(i, offset)| {
            let cmd = template.replace("{#}", &(i + 1).to_string());
            let task = BuiltinTask::Pipe { cmd, path: path.clone(), offset, len };
            TaskSpec::with_id(range_id("pipe", &task, &meta, 0), task)
        })
        .collect();
    let total = tasks.len() as u64;
    // `--cmd` is given: stdout is the commands' output unless --output says otherwise.
    let (setup, commands, pool) = match command_pool(&args, shard, output_mode(&args), Some(total)) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let run = match pool.run(tasks) {
        Ok(r) => r,
        Err(e) => return pool_error(&e),
    };
    let title = format!("bulkhead run --pipepart {}", file.display());
    show_run(run, &args, &setup, &commands, Some(total), None, &title)
}
