//! Helpers the commands share.

use airlock_cli::cluster::CliError;
use airlock_cli::remote;
use std::path::PathBuf;

/// What a command returns: the error, and whether to print it as JSON.
pub(crate) type Out = Result<(), (CliError, bool)>;

pub(crate) fn bad(e: impl std::fmt::Display) -> CliError {
    CliError::BadInput(e.to_string())
}

pub(crate) async fn shutdown_signal(exit_with_stdin: bool) {
    let stdin_closed = async {
        if exit_with_stdin {
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while matches!(tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await, Ok(n) if n > 0)
            {
            }
        } else {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_closed => {}
        _ = term => {}
    }
}

/// This `airlock` binary, to start services with.
pub(crate) fn this_binary() -> Result<PathBuf, CliError> {
    std::env::current_exe().map_err(|e| CliError::Failed(format!("cannot find this binary: {e}")))
}

pub(crate) fn service_error(e: airlock_service::ServiceError) -> CliError {
    remote::cli_error(e)
}
