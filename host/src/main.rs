use clap::Parser;

/// mimalloc: the host allocates per event and per finding; glibc's malloc costs about
/// twice as much on that pattern (see the `dispatch` benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = rulehost::cli::Cli::parse();
    if let Err(error) = rulehost::cli::run(cli) {
        // One line: what failed and why, with the chain of causes.
        eprintln!("rulehost: error: {error:#}");
        std::process::exit(1);
    }
}
