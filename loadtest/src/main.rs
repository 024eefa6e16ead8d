use std::process::ExitCode;

use clap::Parser;
use parley_loadtest::cli::Args;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let json = args.json;
    let report = parley_loadtest::run(args).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    if report.passed() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("FAILED: acknowledged turns were lost, duplicated or reordered (see history)");
        Ok(ExitCode::FAILURE)
    }
}
