//! The `vzhost` command.
mod cli;

fn main() -> std::process::ExitCode {
    // The daemon's helpers are no commands for people: they take over
    // before any argument parsing, and their protocol lives in one place.
    if let Some(code) = vzhost::ns::helper::main_if_helper() {
        return code;
    }
    // The passwd helper edits a running VPS's /etc/shadow from inside it;
    // its work belongs to the VPS room, which the ns room cannot name.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == vzhost::vps::PASSWD_HELPER)
    {
        let code = vzhost::vps::passwd_helper(std::io::stdin().lock());
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    cli::main()
}
