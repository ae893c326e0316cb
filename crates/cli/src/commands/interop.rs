//! `airlock interop`: AWS Clean Rooms shapes in and out.

use airlock_cli::cluster::CliError;

use crate::args::*;

pub(crate) fn interop_aws(command: AwsCommand) -> Result<(), CliError> {
    use airlock_cli::interop;
    let (converted, out) = match command {
        AwsCommand::Import {
            what:
                AwsImport::Rule {
                    file,
                    alias,
                    dataset,
                    identity,
                    k,
                    join,
                    dimensions,
                    measures,
                    accounts,
                    out,
                },
        } => {
            let mut map = std::collections::BTreeMap::new();
            for a in accounts {
                let (id, member) = a
                    .split_once('=')
                    .ok_or_else(|| CliError::BadInput("--account must be ID=MEMBER".into()))?;
                map.insert(id.trim().to_string(), member.trim().to_string());
            }
            let spec = airlock_interop::aws::TableSpec {
                alias,
                dataset,
                identity,
                min_distinct_identities: k,
                join,
                dimensions,
                measures: interop::parse_measures(&measures)?,
                accounts: map,
            };
            (interop::import_rule(&file, &spec)?, out)
        }
        AwsCommand::Import {
            what: AwsImport::Template { file, purpose, out },
        } => (interop::import_template(&file, &purpose)?, out),
        AwsCommand::Export {
            what: AwsExport::Rule { collab, table, out },
        } => (interop::export_rule(&collab, &table)?, out),
        AwsCommand::Export {
            what:
                AwsExport::Template {
                    collab,
                    template,
                    accept_wider,
                    out,
                },
        } => (
            interop::export_template(&collab, &template, accept_wider)?,
            out,
        ),
    };
    interop::emit(&converted.value, &converted.notes, out.as_deref())
}
