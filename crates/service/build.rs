//! Builds the web console (`console/`, Vite) into `OUT_DIR` and writes the
//! table that embeds it into the hub (`console_assets.rs`). Without Node.js,
//! or if its build fails, the hub embeds one plain page saying the console
//! was not built and how to build it, and everything else builds as usual;
//! with `AIRLOCK_REQUIRE_CONSOLE=1` (CI) that is an error instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const NODE_HELP: &str = "install Node.js 20 or later and npm (Debian: apt-get install nodejs npm; or https://nodejs.org), then build again";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let console = manifest.join("../../console");
    for p in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.js",
    ] {
        println!("cargo:rerun-if-changed={}", console.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=AIRLOCK_REQUIRE_CONSOLE");
    let dist = out.join("console");
    let built = build(&console, &dist);
    let files = match built {
        Ok(()) => collect(&dist),
        Err(why) => {
            if std::env::var("AIRLOCK_REQUIRE_CONSOLE").as_deref() == Ok("1") {
                panic!("the console was not built: {why}");
            }
            println!("cargo:warning=the web console was not built ({why}); the hub serves a page saying so");
            let _ = std::fs::remove_dir_all(&dist);
            std::fs::create_dir_all(&dist).expect("OUT_DIR/console");
            let page = manifest.join("src/hub_service/console/not-built.html");
            println!("cargo:rerun-if-changed={}", page.display());
            std::fs::copy(&page, dist.join("index.html")).expect("not-built.html");
            vec![dist.join("index.html")]
        }
    };
    let mut table = String::from("/// The console's files: (path, bytes, gzip bytes, content type).\npub(super) static ASSETS: &[(&str, &[u8], &[u8], &str)] = &[\n");
    let mut total_gz = 0usize;
    for f in files {
        let rel = f
            .strip_prefix(&dist)
            .expect("under dist")
            .to_string_lossy()
            .replace('\\', "/");
        let bytes = std::fs::read(&f).expect("asset");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("gzip");
        let gz = gz.finish().expect("gzip");
        total_gz += gz.len();
        let gz_path = PathBuf::from(format!("{}.gz", f.display()));
        std::fs::write(&gz_path, &gz).expect("write gzip");
        table.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?}), include_bytes!({:?}), {:?}),\n",
            f.display().to_string(),
            gz_path.display().to_string(),
            content_type(&rel)
        ));
    }
    table.push_str("];\n");
    table.push_str(&format!("/// Their total size, gzip-compressed.\npub(super) const COMPRESSED_BYTES: usize = {total_gz};\n"));
    std::fs::write(out.join("console_assets.rs"), table).expect("console_assets.rs");
}

/// `npm ci` when `node_modules` is missing or older than the lock file,
/// then `vite build --outDir DIST`.
fn build(console: &Path, dist: &Path) -> Result<(), String> {
    if !console.join("package.json").exists() {
        return Err(format!("{} is missing", console.display()));
    }
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !node_ok {
        return Err(format!("Node.js was not found: {NODE_HELP}"));
    }
    let stamp = console.join("node_modules/.package-lock.json");
    let lock = console.join("package-lock.json");
    let stale = match (
        std::fs::metadata(&stamp).and_then(|m| m.modified()),
        std::fs::metadata(&lock).and_then(|m| m.modified()),
    ) {
        (Ok(s), Ok(l)) => s < l,
        _ => true,
    };
    if stale {
        run(
            Command::new(npm)
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(console),
            "npm ci",
        )?;
    }
    let _ = std::fs::remove_dir_all(dist);
    run(
        Command::new("node")
            .arg("node_modules/vite/bin/vite.js")
            .args(["build", "--logLevel", "warn", "--emptyOutDir", "--outDir"])
            .arg(dist)
            .current_dir(console),
        "vite build",
    )
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: {e}: {NODE_HELP}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }
}

fn collect(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dist").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".gz") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}
