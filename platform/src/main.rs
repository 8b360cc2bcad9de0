//! The `seccollab` command.

fn main() -> std::process::ExitCode {
    seccollab::cli::main()
}
