//! `airlock` keys commands.

use airlock_cli::cluster::CliError;
use std::path::PathBuf;

use super::common::*;

pub(crate) async fn member(out: PathBuf) -> Out {
    let plain = |e| (e, false);
    let key = airlock_crypto::approval::MemberKey::generate()
        .map_err(|e| plain(CliError::Failed(e.to_string())))?;
    key.save(&out).map_err(|e| plain(bad(e.to_string())))?;
    println!("member key      {}", out.display());
    println!(
        "member_key = \"{}\"   # for the member's node.toml",
        key.public_hex()
    );
    Ok(())
}

pub(crate) fn keys_init(
    dir: &std::path::Path,
    name: &str,
    ca_dir: Option<&std::path::Path>,
    extra: &[String],
) -> Result<(), CliError> {
    use airlock_crypto::pki::{self, Ca};
    use airlock_crypto::sealing::{self, NodeKeys};
    let fail = |e: airlock_crypto::CryptoError| CliError::Failed(e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
    let ca = match ca_dir {
        Some(c) => {
            let cert = std::fs::read_to_string(c.join("ca.crt"))
                .map_err(|e| bad(format!("{}: {e}", c.join("ca.crt").display())))?;
            let key = std::fs::read_to_string(c.join("ca.key"))
                .map_err(|e| bad(format!("{}: {e}", c.join("ca.key").display())))?;
            Ca::from_pem(&cert, &key).map_err(bad)?
        }
        None => {
            if dir.join("ca.crt").exists() {
                return Err(bad(format!(
                    "{} exists: pass --ca-dir {} to issue from it, or remove it to make a new CA",
                    dir.join("ca.crt").display(),
                    dir.display()
                )));
            }
            let ca = Ca::generate(name).map_err(fail)?;
            std::fs::write(dir.join("ca.crt"), ca.cert_pem())
                .map_err(|e| CliError::Failed(e.to_string()))?;
            pki::write_private(&dir.join("ca.key"), &ca.key_pem()).map_err(fail)?;
            println!("new CA          {}", dir.join("ca.crt").display());
            ca
        }
    };
    let san = if name == "hub" {
        "hub.airlock".to_string()
    } else {
        airlock_service::links::node_server_name(name)
    };
    let mut sans = vec!["localhost", "127.0.0.1", san.as_str()];
    sans.extend(extra.iter().map(String::as_str));
    let leaf = ca.issue(name, &sans).map_err(fail)?;
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    pki::write_private(&dir.join("tls.key"), &leaf.key_pem).map_err(fail)?;
    println!(
        "TLS certificate {} ({})",
        dir.join("tls.crt").display(),
        pki::cert_fingerprint(&leaf.cert_pem).map_err(fail)?
    );
    let xpath = dir.join("x25519.key");
    let keys = if xpath.exists() {
        NodeKeys::load(&xpath).map_err(fail)?
    } else {
        let k = NodeKeys::generate().map_err(fail)?;
        k.save(&xpath).map_err(fail)?;
        k
    };
    println!(
        "X25519 key      {} ({})",
        xpath.display(),
        sealing::fingerprint(&keys.public())
    );
    println!("Compare fingerprints with the other members out of band before pinning them.");
    Ok(())
}
