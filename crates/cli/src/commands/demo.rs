//! `airlock` demo commands.

use airlock_cli::demo::{self, DemoOptions};
use airlock_cli::up;
use std::path::PathBuf;

use super::common::*;

pub(crate) async fn run_demo(
    dir: PathBuf,
    rows: usize,
    distributed: bool,
    dp: bool,
    crypto: bool,
    source: airlock_cli::place::DemoSource,
) -> Out {
    let plain = |e| (e, false);
    let bin = if distributed {
        Some(this_binary().map_err(plain)?)
    } else {
        None
    };
    demo::run(
        &DemoOptions {
            dir,
            rows,
            distributed: bin,
            dp,
            crypto,
            source,
        },
        None,
    )
    .await
    .map_err(plain)
}

pub(crate) async fn up(dir: PathBuf, rows: usize, wire_tap: Option<PathBuf>) -> Out {
    let plain = |e| (e, false);
    let bin = this_binary().map_err(plain)?;
    let mut running = up::start(&up::UpOptions {
        dir,
        rows,
        wire_tap,
        bin,
        results_postgres: None,
        results_s3: None,
        hub_limits: Default::default(),
        node_limits: Default::default(),
    })
    .await
    .map_err(plain)?;
    let i = &running.info;
    println!("Airlock is up.");
    println!("  hub        {}", i.hub);
    println!("  flight-sql {}", i.flight_sql);
    println!(
        "  console    {}/  (sign in with a token below; the certificate is the CA's)",
        i.hub.trim_end_matches('/')
    );
    for (m, url) in &i.nodes {
        println!("  node       {m:<10} {url}");
    }
    println!("  CA         {}", i.ca.display());
    println!("  collaboration '{}'", i.collaboration);
    for (m, t) in &i.tokens {
        let role = if *m == i.analyst { " (analyst)" } else { "" };
        println!("  token      {m:<10} {t}{role}");
    }
    for (m, k) in &i.keys {
        println!("  member key {m:<10} {}", k.display());
    }
    println!();
    println!("Try:");
    println!(
        "  export AIRLOCK_HUB={} AIRLOCK_CA={} AIRLOCK_TOKEN={}",
        i.hub,
        i.ca.display(),
        i.tokens.get(&i.analyst).cloned().unwrap_or_default()
    );
    println!(
            "  airlock query --collab {} 'SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment'",
            i.collaboration
        );
    if let Some(k) = i.keys.get(&i.analyst) {
        println!(
            "  AIRLOCK_KEY={} airlock collab approvals   # versions waiting for {}'s approval",
            k.display(),
            i.analyst
        );
    }
    println!("Ctrl-C stops everything.");
    shutdown_signal(false).await;
    println!("stopping ...");
    running.stop();
    Ok(())
}
