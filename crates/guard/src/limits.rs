//! Limits on what one query may ask of the guard and the engine.
//!
//! A query is refused, never run, when its text is longer than
//! [`Limits::max_sql_bytes`] or one of its expressions is deeper than
//! [`Limits::max_expression_depth`] or larger than
//! [`Limits::max_expression_nodes`]. The walk here is iterative (an
//! explicit stack), so measuring a hostile expression cannot itself
//! overflow the stack; DataFusion's planner grows its stack as it recurses
//! (its `recursive_protection` feature), and the limits keep the work
//! bounded after it.

use airlock_policy::{Control, Refusal};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};

/// Size limits of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest query text, in bytes.
    pub max_sql_bytes: usize,
    /// The deepest expression (an `OR` chain of n terms is n deep).
    pub max_expression_depth: usize,
    /// The most nodes in all the expressions of the query together.
    pub max_expression_nodes: usize,
    /// The deepest nesting of parentheses in the text (the SQL parser
    /// backtracks, and near its own recursion limit of 50 that takes
    /// exponential time).
    pub max_parenthesis_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sql_bytes: 64 * 1024,
            max_expression_depth: 256,
            max_expression_nodes: 20_000,
            max_parenthesis_depth: 32,
        }
    }
}

fn limit(what: String) -> Refusal {
    Refusal::new(Control::Limit, what)
}

impl Limits {
    /// Refuses a query text over the length limit (or nesting parentheses
    /// too deep): checked before anything parses it, here and by the
    /// hub's Flight SQL endpoint before it reads table names.
    pub fn check_sql(&self, sql: &str) -> Result<(), Refusal> {
        if sql.len() > self.max_sql_bytes {
            return Err(limit(format!(
                "the query is {} bytes long, more than the limit of {} (max_sql_bytes)",
                sql.len(),
                self.max_sql_bytes
            )));
        }
        let (mut depth, mut deepest, mut quote) = (0usize, 0usize, None::<char>);
        for c in sql.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '(') => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                (None, ')') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if deepest > self.max_parenthesis_depth {
            return Err(limit(format!(
                "the query nests parentheses {deepest} deep, more than the limit of {} (max_parenthesis_depth)",
                self.max_parenthesis_depth
            )));
        }
        Ok(())
    }

    /// Refuses a plan with an expression over the depth or size limits.
    pub(crate) fn check_plan(&self, plan: &LogicalPlan) -> Result<(), Refusal> {
        let mut nodes = 0usize;
        let mut refusal = None;
        let _ = plan.apply_with_subqueries(|node| {
            let _ = node.apply_expressions(|e| {
                match measure(e, self.max_expression_depth) {
                    Some(n) => nodes += n,
                    None => {
                        refusal = Some(limit(format!(
                            "an expression is nested more than {} deep (max_expression_depth)",
                            self.max_expression_depth
                        )));
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            });
            if refusal.is_some() {
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if let Some(r) = refusal {
            return Err(r);
        }
        if nodes > self.max_expression_nodes {
            return Err(limit(format!(
                "the query's expressions have {nodes} parts, more than the limit of {} (max_expression_nodes)",
                self.max_expression_nodes
            )));
        }
        Ok(())
    }
}

/// The number of nodes of `e`, or `None` if it is deeper than `max_depth`.
/// Iterative, so a deep expression cannot overflow the stack here.
fn measure(e: &Expr, max_depth: usize) -> Option<usize> {
    let mut stack: Vec<(&Expr, usize)> = vec![(e, 1)];
    let mut nodes = 0;
    while let Some((x, depth)) = stack.pop() {
        if depth > max_depth {
            return None;
        }
        nodes += 1;
        let _ = x.apply_children(|c| {
            stack.push((c, depth + 1));
            Ok(TreeNodeRecursion::Continue)
        });
    }
    Some(nodes)
}
