use clap::Parser;

fn main() {
    let cli = rulehost::cli::Cli::parse();
    if let Err(error) = rulehost::cli::run(cli) {
        // One line: what failed and why, with the chain of causes.
        eprintln!("rulehost: error: {error:#}");
        std::process::exit(1);
    }
}
