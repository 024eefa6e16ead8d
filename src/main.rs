use clap::Parser;

fn main() -> std::process::ExitCode {
    parley::cli::run(parley::cli::Cli::parse())
}
