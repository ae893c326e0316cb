//! Allowlists: which scalar functions and expression forms a query may use.
//!
//! Everything not named here is refused. Functions are allowed on dimension
//! columns (below the aggregate) and on released aggregates (above it).

/// Scalar functions allowed anywhere a dimension expression is.
pub use airlock_policy::SCALAR_FUNCTIONS;

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
