use clap::Parser;

// glibc malloc took about a fifth of the server's CPU under load (perf); the turn path
// allocates many small, short-lived objects, which mimalloc serves from thread-local pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    parley::cli::run(parley::cli::Cli::parse())
}
