//! The `vzhost` command.
mod cli;

fn main() -> std::process::ExitCode {
    // The daemon's helpers are no commands for people: they take over
    // before any argument parsing, and their protocol lives in one place.
    if let Some(code) = vzhost::ns::helper::main_if_helper() {
        return code;
    }
    cli::main()
}
