//! `airlock demo`: sample data, a collaboration, the canonical analyses and
//! three refused queries, end to end in one process.

use std::path::Path;
use std::time::Instant;

use crate::cluster::{CliError, Cluster, Tap};
use crate::data;
use crate::output::{render, Format};
use airlock_hub::Released;

/// The canonical analyses: (title, SQL).
pub const ANALYSES: &[(&str, &str)] = &[
    (
        "Audience overlap by segment",
        "SELECT a.segment, COUNT(DISTINCT a.email) AS people\n\
         FROM audience a JOIN purchases p ON a.email = p.email\n\
         GROUP BY a.segment ORDER BY people DESC",
    ),
    (
        "Buyers and revenue by segment x category",
        "SELECT a.segment, p.category, COUNT(DISTINCT p.email) AS buyers,\n       \
         SUM(p.amount_cents) AS revenue_cents\n\
         FROM audience a JOIN purchases p ON a.email = p.email\n\
         GROUP BY a.segment, p.category ORDER BY a.segment, p.category",
    ),
];

/// The third canonical analysis under differential privacy: its regions are
/// not public, so they are chosen by DP partition selection.
pub const DP_EXTRA: (&str, &str) = (
    "Average order value by region (regions chosen by DP partition selection)",
    "SELECT a.region, AVG(p.amount_cents) AS avg_order_cents\n\
     FROM audience a JOIN purchases p ON a.email = p.email\n\
     GROUP BY a.region ORDER BY a.region",
);

/// The analyses `demo --crypto` runs by private set intersection between
/// the two nodes: (member who asks, title, SQL).
pub const CRYPTO_ANALYSES: &[(&str, &str, &str)] = &[
    (
        "advertiser",
        "Its customers in the publisher's audience and their revenue, by the publisher's segment",
        "SELECT a.segment, COUNT(DISTINCT p.email) AS customers, SUM(p.amount_cents) AS revenue_cents\n\
         FROM audience a JOIN purchases p ON a.email = p.email\n\
         GROUP BY a.segment",
    ),
    (
        "advertiser",
        "Customers in the publisher's audience, by the advertiser's category",
        "SELECT p.category, COUNT(DISTINCT p.email) AS in_audience\n\
         FROM purchases p JOIN audience a ON p.email = a.email\n\
         GROUP BY p.category",
    ),
];

/// Queries the demo shows being refused: (what it tries, SQL).
pub const REFUSED: &[(&str, &str)] = &[
    ("read raw rows", "SELECT * FROM audience"),
    (
        "output the identity",
        "SELECT a.email, COUNT(*) AS orders\n\
         FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.email",
    ),
    (
        "single out one person with a filter",
        "SELECT p.category, SUM(p.amount_cents) AS spend\n\
         FROM audience a JOIN purchases p ON a.email = p.email\n\
         WHERE a.email = 'ana.smith0@example.com' GROUP BY p.category",
    ),
];

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Directory for data and configuration.
    pub dir: std::path::PathBuf,
    /// Audience rows.
    pub rows: usize,
    /// Run against a hub and nodes as separate processes (`airlock up`),
    /// started with this `airlock` binary.
    pub distributed: Option<std::path::PathBuf>,
    /// Run under differential privacy (budget epsilon 3, 1 per analysis).
    pub dp: bool,
    /// Run in crypto mode: overlaps and sums by private set intersection
    /// between the two nodes, no executor.
    pub crypto: bool,
    /// Where the members' data is put and read from.
    pub source: crate::place::DemoSource,
}

/// Where the demo's queries run.
enum Runner {
    Local(Box<Cluster>),
    Remote(Box<crate::up::Running>),
}

impl Runner {
    async fn query(&self, member: &str, sql: &str) -> Result<Released, CliError> {
        match self {
            Runner::Local(c) => c.query(member, sql).await,
            Runner::Remote(r) => {
                let client = r.client(member)?;
                crate::remote::query(&client, &r.info.collaboration, sql).await
            }
        }
    }

    async fn budget(
        &self,
        member: &str,
    ) -> Result<Option<airlock_service::api::BudgetView>, CliError> {
        match self {
            Runner::Local(c) => c.budget(member).await,
            Runner::Remote(r) => {
                let client = r.client(member)?;
                client
                    .budget(&r.info.collaboration)
                    .await
                    .map(Some)
                    .map_err(crate::remote::cli_error)
            }
        }
    }

    async fn print_budget(&self, member: &str) -> Result<(), CliError> {
        if let Some(b) = self.budget(member).await? {
            println!("      {}", crate::output::budget_line(&b));
        }
        Ok(())
    }
}

/// Runs the demo, printing to stdout. With `tap`, every byte stream that
/// leaves a node is recorded.
pub async fn run(opts: &DemoOptions, tap: Option<Tap>) -> Result<(), CliError> {
    let dir = opts.dir.as_path();
    println!("Airlock demo: a publisher and an advertiser in one clean room");
    println!();
    let t = Instant::now();
    println!(
        "1. Writing sample data for two members into {} ...",
        dir.display()
    );
    let written = data::write_demo(dir, opts.rows, true).map_err(CliError::Failed)?;
    // A fresh collaboration: its budget starts whole.
    for suffix in ["", "-wal", "-shm"] {
        let f = dir.join(format!(
            "{}{suffix}",
            airlock_service::ledger::EMBEDDED_LEDGER
        ));
        if f.exists() {
            std::fs::remove_file(&f)
                .map_err(|e| CliError::Failed(format!("removing {}: {e}", f.display())))?;
        }
    }
    if opts.dp || opts.crypto {
        std::fs::write(
            dir.join("collaboration.toml"),
            if opts.crypto {
                data::collaboration_toml_crypto()
            } else {
                data::collaboration_toml_dp()
            },
        )
        .map_err(|e| CliError::Failed(format!("writing collaboration.toml: {e}")))?;
    }
    // And each member's node's own ledger of it starts whole too.
    crate::cluster::forget_local_nodes(&dir.join("collaboration.toml"))?;
    println!(
        "   publisher  audience.parquet   {:>10} rows (email, segment, region, age_band, consent)",
        written.audience
    );
    println!(
        "   advertiser purchases.parquet  {:>10} rows (email, order_id, amount_cents, category, day), {} customers",
        written.purchases, written.customers
    );
    if opts.source != crate::place::DemoSource::Files {
        let placed = crate::place::place_demo(dir, &opts.source)
            .await
            .map_err(CliError::Failed)?;
        println!(
            "   put in place as a member would hold it ({} source), registered in each owner's catalog:",
            opts.source.kind()
        );
        for (member, place) in ["publisher ", "advertiser"].iter().zip(&placed) {
            println!("   {member} {place}");
        }
    }
    println!("   ({:.1}s)", t.elapsed().as_secs_f64());
    let config = dir.join("collaboration.toml");
    println!();
    if opts.dp {
        println!(
            "2. Collaboration {}: both datasets read in place; aggregation rules with differential privacy\n   (epsilon 1 per analysis from a budget of 3; at most 3 rows and 3 groups per person; exact discrete Laplace noise)",
            config.display()
        );
    } else if opts.crypto {
        println!(
            "2. Collaboration {} in crypto mode: no executor; the two nodes compute overlaps and sums\n   by private set intersection (ristretto255 blinding, exponential ElGamal under a key split between the two nodes), k = 50",
            config.display()
        );
    } else {
        println!(
            "2. Collaboration {}: both datasets read in place; aggregation rules with k = 50 distinct people per output row",
            config.display()
        );
    }
    println!(
        "   purpose 'measurement': the publisher's node counts only people whose consent column is true"
    );
    let cluster = match &opts.distributed {
        None => Runner::Local(Box::new(Cluster::open(&config, tap).await?)),
        Some(bin) => {
            println!("   starting a hub and one node per member as separate processes ...");
            let running = crate::up::start(&crate::up::UpOptions {
                dir: dir.to_path_buf(),
                rows: opts.rows,
                wire_tap: None,
                bin: bin.clone(),
                results_postgres: None,
                results_s3: None,
                hub_limits: Default::default(),
                node_limits: Default::default(),
            })
            .await?;
            println!("   hub {}", running.info.hub);
            for (m, url) in &running.info.nodes {
                println!("   node of {m} {url}");
            }
            Runner::Remote(Box::new(running))
        }
    };
    if opts.crypto {
        println!();
        println!("3. Overlap analyses by private set intersection (no executor)");
        for (i, (member, title, sql)) in CRYPTO_ANALYSES.iter().enumerate() {
            show_analysis_as(&cluster, member, i + 1, title, sql).await?;
        }
        let (title, sql) = ANALYSES[1];
        println!();
        println!("   Not computable without an executor: {title}");
        println!("{}", indent(sql, 6));
        match cluster.query("advertiser", sql).await {
            Err(e @ CliError::Refused { .. }) => println!("      -> {e}"),
            Err(e) => return Err(e),
            Ok(_) => {
                return Err(CliError::Failed(
                    "crypto mode released a shape it does not support".into(),
                ))
            }
        }
        println!();
        println!("Total {:.1}s", t.elapsed().as_secs_f64());
        return Ok(());
    }
    println!();
    println!("3. Canonical analyses, run as 'advertiser'");
    let mut analyses: Vec<(&str, &str)> = ANALYSES.to_vec();
    if opts.dp {
        analyses.push(DP_EXTRA);
    }
    for (i, (title, sql)) in analyses.iter().enumerate() {
        show_analysis(&cluster, i + 1, title, sql).await?;
        cluster.print_budget("advertiser").await?;
    }
    if opts.dp {
        let (title, sql) = ANALYSES[0];
        println!();
        println!(
            "   Analysis {}: {title}, again (the budget is spent)",
            analyses.len() + 1
        );
        match cluster.query("advertiser", sql).await {
            Err(e @ CliError::Refused { .. }) => println!("      -> {e}"),
            Err(e) => return Err(e),
            Ok(_) => {
                return Err(CliError::Failed(
                    "the fourth analysis was released although the budget was spent".into(),
                ))
            }
        }
    }
    println!();
    println!("4. Queries Airlock refuses");
    for (i, (what, sql)) in REFUSED.iter().enumerate() {
        println!();
        println!("   {}. trying to {what}:", i + 1);
        println!("{}", indent(sql, 6));
        match cluster.query("advertiser", sql).await {
            Err(e @ CliError::Refused { .. }) => println!("      -> {e}"),
            Err(e) => return Err(e),
            Ok(_) => {
                return Err(CliError::Failed(format!(
                    "demo query was expected to be refused but was released: {sql}"
                )))
            }
        }
    }
    println!();
    println!("Explore:");
    println!(
        "  cargo run --release --bin airlock -- check --collab {} 'SELECT p.category, COUNT(DISTINCT p.email) FROM purchases p GROUP BY p.category'",
        config.display()
    );
    println!(
        "  cargo run --release --bin airlock -- query --collab {} --as advertiser 'SELECT a.region, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.region'",
        config.display()
    );
    if opts.dp {
        println!(
            "  cargo run --release --bin airlock -- budget show --collab {} --as advertiser",
            config.display()
        );
    }
    println!("Total {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}

fn indent(s: &str, n: usize) -> String {
    s.lines()
        .map(|l| format!("{}{l}", " ".repeat(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn show_analysis(cluster: &Runner, n: usize, title: &str, sql: &str) -> Result<(), CliError> {
    show_analysis_as(cluster, "advertiser", n, title, sql).await
}

async fn show_analysis_as(
    cluster: &Runner,
    member: &str,
    n: usize,
    title: &str,
    sql: &str,
) -> Result<(), CliError> {
    println!();
    println!("   Analysis {n}, asked by '{member}': {title}");
    println!("{}", indent(sql, 6));
    let t = Instant::now();
    let released = cluster.query(member, sql).await?;
    let table = render(&released, Format::Table).map_err(CliError::Failed)?;
    println!("{}", indent(&table, 6));
    println!("      released in {:.2}s", t.elapsed().as_secs_f64());
    Ok(())
}

/// The directory the demo uses when none is given.
pub fn default_dir() -> &'static Path {
    Path::new("airlock-demo")
}
