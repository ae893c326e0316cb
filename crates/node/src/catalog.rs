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
}

impl Location {
    /// The kind's name, as written in the catalog (safe to show: it says
    /// nothing of where the data is).
    pub fn kind(&self) -> &'static str {
        match self {
            Location::Files { .. } => "files",
            Location::S3 { .. } => "s3",
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
        }
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
