//! Local files: Parquet, CSV (with a header) or JSON lines, one file, a
//! directory or a glob, read in place from the node's data directory and
//! refused if any of them leads outside it once links are followed.
//!
//! Projection and filter pushdown are DataFusion's over files: Parquet
//! reads only the projected columns and prunes row groups and pages by the
//! filters' statistics; CSV and JSON are read whole and filtered after.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;

use super::{listing_table, OpenError, Source};
use crate::catalog::DatasetFormat;

/// A dataset of local files under the node's data directory.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// The directory datasets are read from.
    dir: PathBuf,
    /// `dir` canonicalized (`None` if it does not exist).
    root: Option<PathBuf>,
    /// The configured path, relative to `dir` (a file, directory or glob).
    path: String,
    format: DatasetFormat,
}

impl FileSource {
    /// The files at `path` (relative to `dir`, whose canonical form is
    /// `root`) in `format`.
    pub fn new(dir: &Path, root: Option<&Path>, path: &str, format: DatasetFormat) -> Self {
        FileSource {
            dir: dir.to_path_buf(),
            root: root.map(Path::to_path_buf),
            path: path.to_string(),
            format,
        }
    }

    async fn listing(&self, ctx: &SessionContext) -> Result<Arc<dyn TableProvider>, OpenError> {
        let path = self.dir.join(&self.path);
        let path_text = path.to_string_lossy().to_string();
        let is_glob = self.path.contains(['*', '?', '[']);
        if !is_glob && !path.exists() {
            return Err(OpenError::new(
                "nothing found at its location",
                format!("no file at {path_text}"),
            ));
        }
        confined(self.root.as_deref(), &self.dir, &self.path)
            .map_err(|why| OpenError::new(why.clone(), format!("{why}: {path_text}")))?;
        let url = ListingTableUrl::parse(&path_text)
            .map_err(|e| OpenError::new("its path is not a valid path", e.to_string()))?;
        listing_table(ctx, url, self.format).await
    }
}

impl Source for FileSource {
    fn open<'a>(
        &'a self,
        ctx: &'a SessionContext,
    ) -> BoxFuture<'a, Result<Arc<dyn TableProvider>, OpenError>> {
        Box::pin(self.listing(ctx))
    }
}

/// Files visited at most when checking one dataset's confinement.
const MAX_CONFINEMENT_ENTRIES: usize = 1_000_000;

/// Refuses a dataset whose files are not all inside `dir` once every
/// symbolic link is followed: the path itself, and for a directory or a
/// glob every entry below the directory it names (or the glob's fixed
/// prefix). `root` is `dir` canonicalized.
pub(crate) fn confined(root: Option<&Path>, dir: &Path, path: &str) -> Result<(), String> {
    let outside = || {
        "the dataset's path leads outside the directory datasets are read from (after following links)"
            .to_string()
    };
    let root =
        root.ok_or_else(|| "the directory datasets are read from does not exist".to_string())?;
    let lexical = Path::new(path);
    if lexical.is_absolute()
        || lexical
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(outside());
    }
    // The fixed part of a glob: the components before the first with a
    // glob character.
    let fixed: std::path::PathBuf = lexical
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect();
    let start = dir.join(&fixed);
    let real = start.canonicalize().map_err(|_| {
        if fixed.as_os_str().is_empty() {
            outside()
        } else {
            "nothing found at its location".to_string()
        }
    })?;
    if !real.starts_with(root) {
        return Err(outside());
    }
    let mut stack = vec![real];
    let mut seen = 0usize;
    while let Some(p) = stack.pop() {
        if !p.is_dir() {
            continue;
        }
        let entries =
            std::fs::read_dir(&p).map_err(|_| "cannot list the dataset's directory".to_string())?;
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_CONFINEMENT_ENTRIES {
                return Err(format!(
                    "the dataset's directory has more than {MAX_CONFINEMENT_ENTRIES} entries"
                ));
            }
            let target = e.path().canonicalize().map_err(|_| outside())?;
            if !target.starts_with(root) {
                return Err(outside());
            }
            // Only real directories are descended (a link to a directory
            // inside the root is listed where it really is).
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(target);
            }
        }
    }
    Ok(())
}
