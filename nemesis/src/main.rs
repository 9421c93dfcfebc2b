//! `ordermesh-nemesis [--minutes M] [--seed S] [--shoppers N] [--out DIR]`: the whole mesh under minutes of
//! random, overlapping faults, then the checker; exits 1 when it finds a violation.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use ordermesh_nemesis::{Options, run};

const USAGE: &str = "usage: ordermesh-nemesis [--minutes M] [--seed S] [--shoppers N] [--out DIR]
  --minutes   how long faults are injected (default 2; fractions allowed)
  --seed      the fault plan's and the shoppers' seed (default: a new one, printed)
  --shoppers  concurrent shoppers (default 6)
  --out       where the report, history, fault log and plan go (default target/nemesis/seed-S)
  --plan      print the fault plan the seed draws for that many minutes, and run nothing
Needs root, the workspace's binaries next to this one (cargo build --release --workspace --bins),
and Debian's faketime package.";

fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut minutes = 2.0;
    let mut seed: u64 = rand::random();
    let mut shoppers = 6;
    let mut out = None;
    let mut plan_only = false;
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--minutes" => minutes = value()?.parse().context(USAGE)?,
            "--seed" => seed = value()?.parse().context(USAGE)?,
            "--shoppers" => shoppers = value()?.parse().context(USAGE)?,
            "--out" => out = Some(PathBuf::from(value()?)),
            "--plan" => plan_only = true,
            _ => anyhow::bail!("{USAGE}"),
        }
    }
    anyhow::ensure!(minutes > 0.0 && shoppers > 0, "{USAGE}");
    if plan_only {
        let plan = ordermesh_nemesis::schedule::plan(seed, std::time::Duration::from_secs_f64(minutes * 60.0));
        #[allow(clippy::print_stdout)] // the plan is the command's output
        for p in plan {
            println!("{:>7.1} s  {:>5.1} s  {}", p.at.as_secs_f64(), p.lasts.as_secs_f64(), p.fault.describe());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let binaries = std::env::current_exe()?.parent().context("the binary's directory")?.to_owned();
    let out = out.unwrap_or_else(|| PathBuf::from(format!("target/nemesis/seed-{seed}")));
    eprintln!("ordermesh-nemesis: seed {seed} (replay with --seed {seed}), {minutes} min; output in {}", out.display());
    let options = Options { minutes, seed, shoppers, out: out.clone(), binaries };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build()?;
    let outcome = runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            outcome = run(&options) => outcome,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            _ = terminate.recv() => anyhow::bail!("terminated"),
        }
    });
    // Dropping the runtime drops the tasks that hold the deployment, which stops every private server.
    runtime.shutdown_timeout(std::time::Duration::from_secs(30));
    let outcome = outcome?;
    #[allow(clippy::print_stdout)] // the report is the command's output
    {
        println!("{}", outcome.report);
    }
    eprintln!(
        "seed {seed}: {} violation(s); report, history and fault log in {}",
        outcome.violations.len(),
        out.display()
    );
    Ok(if outcome.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
