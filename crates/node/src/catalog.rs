//! The node's catalog: where each of its member's datasets lives and where
//! its credentials come from. A member registers a dataset once here, on
//! its own node (`[datasets.NAME]` in `node.toml`, or a catalog file the
//! node reads); collaborations name the dataset only. Locations, buckets,
//! connection strings and credentials are read by the node and never
//! leave it: a refusal names the dataset and the kind of problem, and the
//! detail (which may name the location) goes to the node's own log.
//!
//! One registered dataset serves every collaboration that names it, with
//! no copy: a change of location here reaches all of them at the node's
//! next start, with no edit of any collaboration file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The catalog file of a collaboration run in one process (`airlock run`,
/// the in-process demo): beside the collaboration file, every member's
/// datasets in one file, as each member's node would hold its own.
pub const CATALOG_FILE: &str = "catalog.toml";

/// File format of a dataset read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values with a header row.
    Csv,
    /// Newline-delimited JSON.
    Json,
}

/// Where an S3 source's credentials come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum S3Credentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN` if set) of the node's environment; both must be
    /// set.
    #[default]
    Environment,
    /// Variables of the node's environment named here (one pair per
    /// dataset, so two datasets can use two accounts).
    Variables {
        /// Name of the variable holding the access key id.
        access_key_id: String,
        /// Name of the variable holding the secret access key.
        secret_access_key: String,
        /// Name of the variable holding a session token, if any.
        #[serde(default)]
        session_token: Option<String>,
    },
    /// A shared-credentials file in the AWS format (`[profile]` sections
    /// with `aws_access_key_id` and `aws_secret_access_key`), relative to
    /// the catalog's directory.
    File {
        /// The file.
        path: PathBuf,
        /// Its section (`default` if not given).
        #[serde(default)]
        profile: Option<String>,
    },
    /// The AWS default chain: web identity, container and instance roles.
    Instance,
}

/// The location of one dataset, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Location {
    /// Local files: one file, a directory or a glob, relative to the
    /// node's data directory and confined to it.
    Files {
        /// File, directory or glob.
        path: String,
        /// Their format.
        format: DatasetFormat,
    },
    /// Objects in S3 or an S3-compatible store: one object, or every
    /// object under a prefix ending in `/` (partitioned layouts included).
    S3 {
        /// The bucket.
        bucket: String,
        /// An object key, or a prefix ending in `/` (empty: the bucket).
        #[serde(default)]
        prefix: String,
        /// The objects' format.
        format: DatasetFormat,
        /// The service's URL (`http://127.0.0.1:9000`); AWS's own if not
        /// given.
        #[serde(default)]
        endpoint: Option<String>,
        /// The region (`us-east-1` if not given).
        #[serde(default)]
        region: Option<String>,
        /// Whether an `http://` endpoint may be used (off: TLS only).
        #[serde(default)]
        allow_http: bool,
        /// Where the credentials come from.
        #[serde(default)]
        credentials: S3Credentials,
    },
    /// A Delta Lake table, its current version or the one named here: a
    /// directory under the node's data directory (`path`), or a prefix in
    /// S3 or an S3-compatible store (`bucket`, with the `s3` kind's fields).
    Delta {
        /// The table's directory, relative to the data directory.
        #[serde(default)]
        path: Option<String>,
        /// The bucket, for a table in object storage.
        #[serde(default)]
        bucket: Option<String>,
        /// The table's prefix in the bucket.
        #[serde(default)]
        prefix: String,
        /// The service's URL (AWS's own if not given).
        #[serde(default)]
        endpoint: Option<String>,
        /// The region (`us-east-1` if not given).
        #[serde(default)]
        region: Option<String>,
        /// Whether an `http://` endpoint may be used.
        #[serde(default)]
        allow_http: bool,
        /// Where the store's credentials come from.
        #[serde(default)]
        credentials: S3Credentials,
        /// A pinned table version (the newest if not given).
        #[serde(default)]
        version: Option<u64>,
    },
    /// A PostgreSQL table or view, read over the node's own read-only
    /// connection with the query's filters pushed into the SQL.
    Postgres {
        /// The relation: `name` or `schema.name`, as PostgreSQL reads it.
        table: String,
        /// Where the connection string (`postgres://user:password@host/db`,
        /// with `sslmode` and `sslrootcert` for TLS) comes from.
        connection: PostgresUrl,
    },
}

/// Where a PostgreSQL source's connection string comes from: it holds the
/// password, so never the catalog itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PostgresUrl {
    /// The node's environment variable of this name.
    Env(String),
    /// This file (relative to the catalog's directory), its first line.
    File(PathBuf),
}

impl Location {
    /// The kind's name, as written in the catalog (safe to show: it says
    /// nothing of where the data is).
    pub fn kind(&self) -> &'static str {
        match self {
            Location::Files { .. } => "files",
            Location::S3 { .. } => "s3",
            Location::Delta { .. } => "delta",
            Location::Postgres { .. } => "postgres",
        }
    }

    /// The files this entry names on the node besides its data (credential
    /// files), for a loader to make absolute against the entry's directory.
    pub fn credential_files_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            Location::S3 {
                credentials: S3Credentials::File { path, .. },
                ..
            }
            | Location::Delta {
                credentials: S3Credentials::File { path, .. },
                ..
            } => vec![path],
            Location::Postgres {
                connection: PostgresUrl::File(path),
                ..
            } => vec![path],
            _ => Vec::new(),
        }
    }
}

/// The datasets a node can read, by name, and the directories relative
/// paths in them are read against.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    datasets: BTreeMap<String, Location>,
    /// Local files' paths are relative to (and confined to) this directory.
    data_dir: PathBuf,
    /// Credential files are relative to this directory.
    config_dir: PathBuf,
    /// Sources read every row and leave filters to DataFusion (the
    /// benchmark's baseline for pushdown).
    no_pushdown: bool,
}

/// A catalog file as written: `[datasets.NAME]` tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// The datasets, by name.
    #[serde(default)]
    pub datasets: BTreeMap<String, Location>,
}

impl CatalogFile {
    /// A catalog of local files: `(dataset, path, format)` each.
    pub fn files(entries: &[(&str, &str, DatasetFormat)]) -> CatalogFile {
        CatalogFile {
            datasets: entries
                .iter()
                .map(|(name, path, format)| {
                    (
                        name.to_string(),
                        Location::Files {
                            path: path.to_string(),
                            format: *format,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Writes it as `catalog.toml` in `dir` (the one-process catalog).
    pub fn write_to(&self, dir: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| format!("catalog: {e}"))?;
        std::fs::write(dir.join(CATALOG_FILE), text)
            .map_err(|e| format!("writing {CATALOG_FILE}: {e}"))
    }
}

impl Catalog {
    /// A catalog of `datasets`, local files under `data_dir`, credential
    /// files under `config_dir`.
    pub fn new(
        datasets: BTreeMap<String, Location>,
        data_dir: &Path,
        config_dir: &Path,
    ) -> Catalog {
        Catalog {
            datasets,
            data_dir: data_dir.to_path_buf(),
            config_dir: config_dir.to_path_buf(),
            no_pushdown: false,
        }
    }

    /// The same catalog with pushdown into the sources turned off (a
    /// benchmark's baseline; no node runs like this).
    pub fn without_pushdown(mut self) -> Catalog {
        self.no_pushdown = true;
        self
    }

    /// Whether sources push projections and filters down (always, but in a
    /// benchmark's baseline).
    pub fn pushdown(&self) -> bool {
        !self.no_pushdown
    }

    /// Reads a catalog file; relative paths in it are read against its
    /// own directory.
    pub fn from_file(path: &Path) -> Result<Catalog, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the catalog {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let file: CatalogFile = toml::from_str(&text)
            .map_err(|e| format!("catalog {}: {}", path.display(), e.message()))?;
        Ok(Catalog::new(file.datasets, dir, dir))
    }

    /// The location of dataset `name`, if registered.
    pub fn get(&self, name: &str) -> Option<&Location> {
        self.datasets.get(name)
    }

    /// The registered datasets' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.datasets.keys().map(String::as_str)
    }

    /// Adds (or replaces) a dataset.
    pub fn insert(&mut self, name: &str, location: Location) {
        self.datasets.insert(name.to_string(), location);
    }

    /// The directory local files are read from.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory credential files are read against.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_files_parse_every_kind_and_refuse_unknown_fields() {
        let file: CatalogFile = toml::from_str(
            r#"
[datasets.audience]
kind = "files"
path = "audience/*.parquet"
format = "parquet"

[datasets.crm]
kind = "s3"
bucket = "b"
prefix = "crm/"
format = "csv"
endpoint = "http://127.0.0.1:9000"
allow_http = true
credentials = { variables = { access_key_id = "K", secret_access_key = "S" } }

[datasets.shop]
kind = "s3"
bucket = "b"
format = "json"
credentials = { file = { path = "aws.ini", profile = "shop" } }
"#,
        )
        .expect("parses");
        assert_eq!(file.datasets.len(), 3);
        assert_eq!(file.datasets["audience"].kind(), "files");
        assert!(matches!(
            &file.datasets["shop"],
            Location::S3 { credentials: S3Credentials::File { profile: Some(p), .. }, .. } if p == "shop"
        ));
        for bad in [
            "[datasets.a]\nkind = \"files\"\npath = \"a\"\nformat = \"xlsx\"",
            "[datasets.a]\nkind = \"ftp\"\npath = \"a\"\nformat = \"csv\"",
            "[datasets.a]\nkind = \"files\"\npath = \"a\"\nformat = \"csv\"\ncolour = 1",
            "[datasets.a]\nkind = \"s3\"\nformat = \"csv\"",
        ] {
            assert!(toml::from_str::<CatalogFile>(bad).is_err(), "{bad}");
        }
    }
}
