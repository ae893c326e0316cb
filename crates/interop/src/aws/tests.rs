//! Unit tests of the conversions.

use super::templates::swap_params;
use super::*;

fn spec() -> TableSpec {
    TableSpec {
        alias: "purchases".into(),
        dataset: "orders".into(),
        ..TableSpec::default()
    }
}

#[test]
fn parameters_are_swapped_outside_strings_and_casts() {
    let names = vec!["region".to_string()];
    let sql = "SELECT ':region', x::text FROM t WHERE r = :region -- :region\nAND s = :regions";
    let out = swap_params(sql, &names, ':', '$');
    assert_eq!(
        out,
        "SELECT ':region', x::text FROM t WHERE r = $region -- :region\nAND s = :regions"
    );
    assert_eq!(swap_params(&out, &names, '$', ':'), sql);
}

#[test]
fn unknown_fields_wrong_types_and_truncation_name_the_path() {
    let bad = [
        (
            r#"{"v1": {"aggregation": {"aggregateColumns": [], "joinColumns": [], "dimensionColumns": [], "scalarFunctions": [], "outputConstraints": [], "colour": 1}}}"#,
            "v1.aggregation.colour: unknown field `colour`",
        ),
        (
            r#"{"v1": {"aggregation": {"aggregateColumns": [{"columnNames": ["x"], "function": "MEDIAN"}], "joinColumns": [], "dimensionColumns": [], "scalarFunctions": [], "outputConstraints": []}}}"#,
            "v1.aggregation.aggregateColumns[0].function: unknown variant `MEDIAN`",
        ),
        (
            r#"{"v1": {"list": {"joinColumns": "email", "listColumns": []}}}"#,
            "v1.list.joinColumns: invalid type: string",
        ),
        (
            r#"{"v1": {"list": {"joinColumns": ["email"], "listCol"#,
            "EOF while parsing",
        ),
        (r#"{"v1": {"crypto": {}}}"#, "v1: unknown variant `crypto`"),
    ];
    for (doc, want) in bad {
        let e = import_rule(doc, &spec()).expect_err(doc);
        assert!(e[0].contains(want), "{want}: {e:?}");
    }
    let huge = format!(
        "{{\"v1\": {{\"list\": {{\"joinColumns\": [\"{}\"]}}}}}}",
        "x".repeat(MAX_DOCUMENT)
    );
    assert!(import_rule(&huge, &spec()).expect_err("huge")[0].contains("more than"));
}
