//! The `certctl` binary: parse arguments, start the runtime, run, exit with the code `run` chose.

fn main() -> std::process::ExitCode {
    // A usage error with `--output json` still writes one JSON document (exit 2).
    let cli = certctl::cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            certctl::report::print_stderr(&format!("error: cannot start the async runtime: {e}\n"));
            return std::process::ExitCode::from(2);
        }
    };
    std::process::ExitCode::from(runtime.block_on(certctl::run(cli)))
}
