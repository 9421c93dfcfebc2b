//! `ordermesh-bench`: the load generator's binary (see `ordermesh_bench` and `--help`).

use std::{io::Write, process::ExitCode};

use ordermesh_bench::{Options, run};

#[tokio::main]
#[allow(clippy::print_stdout)]
async fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", ordermesh_bench::options::USAGE);
        return Ok(ExitCode::SUCCESS);
    }
    let options = match Options::parse(args) {
        Ok(options) => options,
        // A usage mistake is a message for a person, not a stack trace.
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    if options.floor_only {
        let floor = ordermesh_bench::floor::measure(
            &options.amqp,
            &options.database,
            options.floor_in_flight(),
            options.duration,
            options.checkout_work,
        )
        .await?;
        let text = if options.json { serde_json::to_string_pretty(&floor)? + "\n" } else { floor.render() };
        let _ = std::io::stdout().write_all(text.as_bytes());
        return Ok(ExitCode::SUCCESS);
    }
    let (json, svg) = (options.json, options.svg.clone());
    let report = run(options).await?;
    let text = if json { serde_json::to_string_pretty(&report.to_json())? + "\n" } else { report.render() };
    // A reader that went away (`| head`) is not an error of the run.
    let _ = std::io::stdout().write_all(text.as_bytes());
    if let Some(path) = svg {
        std::fs::write(&path, report.svg())?;
        eprintln!("latency histogram written to {path}");
    }
    Ok(if report.stock.as_ref().is_some_and(|s| s.balanced) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
