//! `airlock` serve commands.

use airlock_cli::cluster::CliError;
use airlock_service::config::{HubConfig, NodeConfig};
use airlock_service::{hub_service, node_service};
use airlock_store::Store;
use std::path::PathBuf;

use super::common::*;
use crate::args::*;

pub(crate) async fn node(config: PathBuf, exit_with_stdin: bool) -> Out {
    let plain = |e| (e, false);
    let cfg = NodeConfig::load(&config).map_err(|e| plain(bad(e)))?;
    airlock_service::install_crypto_provider();
    node_service::serve(cfg, shutdown_signal(exit_with_stdin))
        .await
        .map_err(|e| plain(service_error(e)))
}

pub(crate) async fn hub(command: HubCommand) -> Out {
    let plain = |e| (e, false);
    match command {
        HubCommand::Serve {
            config,
            database,
            exit_with_stdin,
        } => {
            let mut cfg = HubConfig::load(&config).map_err(|e| plain(bad(e)))?;
            if let Some(db) = database {
                cfg.database = db;
            }
            hub_service::serve(cfg, shutdown_signal(exit_with_stdin))
                .await
                .map_err(|e| plain(service_error(e)))
        }
        HubCommand::TokenCreate {
            config,
            database,
            member,
            days,
        } => {
            if days < 1 {
                return Err(plain(bad("--days must be at least 1")));
            }
            let cfg = HubConfig::load(&config).map_err(|e| plain(bad(e)))?;
            let store = Store::open(&database.unwrap_or(cfg.database))
                .await
                .map_err(|e| plain(bad(e)))?;
            let expires = airlock_store::now_ms() + days * 24 * 3600 * 1000;
            let t = store
                .create_token(&member, Some(expires))
                .await
                .map_err(|e| plain(CliError::Failed(e.to_string())))?;
            println!("{}", t.token);
            eprintln!("token id {} for '{member}', expires in {days} days", t.id);
            Ok(())
        }
        HubCommand::TokenRevoke {
            config,
            database,
            id,
        } => {
            let cfg = HubConfig::load(&config).map_err(|e| plain(bad(e)))?;
            let store = Store::open(&database.unwrap_or(cfg.database))
                .await
                .map_err(|e| plain(bad(e)))?;
            let done = store
                .revoke_token(&id)
                .await
                .map_err(|e| plain(CliError::Failed(e.to_string())))?;
            if done {
                println!("revoked {id}");
                Ok(())
            } else {
                Err(plain(bad(format!(
                    "no active token with id '{id}' (unknown or already revoked)"
                ))))
            }
        }
    }
}
