//! Allowlists: which scalar functions and expression forms a query may use.
//!
//! Everything not named here is refused. Functions are allowed on dimension
//! columns (below the aggregate) and on released aggregates (above it).

/// Scalar functions allowed anywhere a dimension expression is.
pub const SCALAR_FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "substr",
    "substring",
    "left",
    "right",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "concat",
    "concat_ws",
    "coalesce",
    "nullif",
    "starts_with",
    "ends_with",
    "strpos",
    "replace",
    "initcap",
    "abs",
    "round",
    "floor",
    "ceil",
    "date_trunc",
    "date_part",
    "greatest",
    "least",
];

/// Functions whose arguments may all read columns; every other allowed
/// function may have only one argument that reads a column (the others are
/// literals), so an argument computed from data cannot make it fail on one
/// row (error oracle).
pub const ALL_ARGUMENTS_FREE: &[&str] = &[
    "concat",
    "concat_ws",
    "coalesce",
    "nullif",
    "greatest",
    "least",
];

/// Whether a scalar function is allowed.
pub fn scalar_allowed(name: &str) -> bool {
    SCALAR_FUNCTIONS.contains(&name.to_ascii_lowercase().as_str())
}
