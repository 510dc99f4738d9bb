use clap::Parser;

/// mimalloc: the host allocates per event and per finding; glibc's malloc costs about
/// twice as much on that pattern (see the `dispatch` benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    rulehost::install_tls_provider();
    let args = match rulehost::cli::with_config_flags(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(error) => {
            eprintln!(
                "rulehost: error: {}",
                rulehost::logging::error_line(error.as_ref())
            );
            std::process::exit(2);
        }
    };
    let cli = rulehost::cli::Cli::parse_from(args);
    if let Err(error) = rulehost::logging::init(&cli.log_level, cli.log_format) {
        eprintln!(
            "rulehost: error: {}",
            rulehost::logging::error_line(error.as_ref())
        );
        std::process::exit(2);
    }
    match rulehost::cli::run(cli) {
        Ok(()) => {}
        // The reader of our stdout has all it wanted (`| head`).
        Err(error) if rulehost::logging::is_broken_pipe(&error) => {}
        Err(error) => {
            // One line: what failed and why, with the chain of causes.
            tracing::error!("{}", rulehost::logging::error_line(error.as_ref()));
            std::process::exit(1);
        }
    }
}
