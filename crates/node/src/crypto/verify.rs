//! The node's own check of a crypto fragment, whoever sent it.

use airlock_policy::{Ability, AggFunction, AnalysisRule, ColumnRole, Control, Mode, Refusal};
use airlock_protocol::{CryptoFragment, CryptoOutput, CryptoRole, Predicate};

use super::session::*;
use crate::{Node, NodeError};

impl Node {
    /// The strictest k of the two tables, from this node's own policy.
    pub(super) fn crypto_k(&self, f: &CryptoFragment) -> u64 {
        airlock_policy::strictest_k(
            [&f.asker.table, &f.responder.table]
                .iter()
                .filter_map(|t| self.collab.table(t)),
        )
    }

    /// Checks a crypto fragment against this node's own rules.
    pub(super) fn verify_crypto(
        &self,
        f: &CryptoFragment,
        role: CryptoRole,
    ) -> Result<(), NodeError> {
        let c = &self.collab;
        if c.config().collaboration.mode != Mode::Crypto {
            return Err(refuse(
                None,
                None,
                "this collaboration is not in crypto mode",
            ));
        }
        if f.collaboration != c.name() || f.role != role {
            return Err(NodeError::BadFragment(
                "the fragment is for another collaboration or role".into(),
            ));
        }
        if f.querier != f.asker.member || !c.has_ability(&f.querier, Ability::Query) {
            return Err(NodeError::Refused(Refusal::new(
                Control::Ability,
                "the asker is not a member with the 'query' ability",
            )));
        }
        // The measure is the matcher's (one home with the hub's check).
        airlock_guard::crypto_orientation(f).map_err(NodeError::Refused)?;
        let mine = match role {
            CryptoRole::Asker => &f.asker,
            CryptoRole::Responder => &f.responder,
        };
        let other = match role {
            CryptoRole::Asker => &f.responder,
            CryptoRole::Responder => &f.asker,
        };
        if mine.member != self.member
            || c.owner_of(&mine.table) != Some(self.member.as_str())
            || c.owner_of(&other.table) != Some(other.member.as_str())
            || other.member == self.member
        {
            return Err(refuse(
                Some(&mine.table),
                None,
                "this node does not hold that side of the query",
            ));
        }
        let table = c
            .table(&mine.table)
            .ok_or_else(|| NodeError::BadFragment("unknown table".into()))?;
        if matches!(table.rule, AnalysisRule::List { .. }) {
            return Err(refuse(
                Some(&mine.table),
                None,
                "a list rule releases no aggregates",
            ));
        }
        table
            .rule
            .admits(&f.querier, f.template.is_some())
            .map_err(|why| refuse(Some(&mine.table), None, why))?;
        if let Some(run) = &f.template {
            crate::verify::admit_run(
                c,
                &self.member,
                run,
                &f.querier,
                f.purpose.as_deref(),
                &mine.table,
            )?;
        }
        c.check_purpose(f.purpose.as_deref())
            .map_err(NodeError::Refused)?;
        let dimension = |col: &str| matches!(table.role(col), Some(ColumnRole::Dimension));
        for col in mine.filter.iter().flat_map(Predicate::columns) {
            if !dimension(col) {
                return Err(refuse(
                    Some(&mine.table),
                    Some(col),
                    "only dimensions may be filtered",
                ));
            }
        }
        // The node whose table is grouped by checks the groups; the other
        // checks the measure.
        match role == f.groups_of {
            true => {
                for g in &f.group_columns {
                    if !dimension(g) {
                        return Err(refuse(
                            Some(&mine.table),
                            Some(g),
                            "only dimensions may be grouped by",
                        ));
                    }
                }
            }
            false => {
                if let Some(m) = &f.measure {
                    let Some(ColumnRole::Measure(fs)) = table.role(m) else {
                        return Err(refuse(
                            Some(&mine.table),
                            Some(m),
                            "not a measure of this table",
                        ));
                    };
                    for (_, o) in &f.outputs {
                        let need = match o {
                            CryptoOutput::Sum => Some(AggFunction::Sum),
                            CryptoOutput::Avg => Some(AggFunction::Avg),
                            _ => None,
                        };
                        if let Some(n) = need {
                            if !fs.contains(&n) {
                                return Err(NodeError::Refused(
                                    Refusal::new(
                                        Control::DisallowedAggregate,
                                        "the rule does not allow this aggregate on the measure",
                                    )
                                    .table(&mine.table, Some(table.rule.kind()))
                                    .column(m),
                                ));
                            }
                        }
                    }
                } else if f
                    .outputs
                    .iter()
                    .any(|(_, o)| matches!(o, CryptoOutput::Sum | CryptoOutput::Avg))
                {
                    return Err(NodeError::BadFragment("a sum without a measure".into()));
                }
            }
        }
        Ok(())
    }
}
