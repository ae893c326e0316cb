//! The protocol steps of each role, in order.

use std::collections::HashMap;
use std::sync::Arc;

use airlock_policy::{Control, Refusal};
use airlock_protocol::{CryptoFragment, CryptoOutput};
use airlock_psi::grouped::{self, Padding};
use airlock_psi::tagged;
use curve25519_dalek::ristretto::RistrettoPoint;
use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use super::rows::*;
use super::session::*;
use crate::{Node, NodeError};

impl Node {
    /// The matcher's step 1: its people with the values of its own
    /// measure the query needs, hashed, blinded and encrypted, with
    /// dummies.
    pub(super) async fn psi_start(
        &self,
        session: &str,
        f: CryptoFragment,
    ) -> Result<Vec<u8>, NodeError> {
        // Checked by the caller, before anything is read.
        let id = session_id(session)?;
        let dp = self.crypto_dp(&f)?;
        let (ids, nums) = self.people_with_values(&f, dp.as_ref()).await?;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let people: Vec<(RistrettoPoint, Vec<u64>)> =
            self.hash_ids(&refs)?.into_iter().zip(nums).collect();
        let noise = self.dummy_noise(&f, dp.as_ref())?;
        let dummies = noise
            .0
            .dummies(noise.1)
            .map_err(|e| NodeError::Local(e.to_string()))?;
        let (matcher, m1, _) =
            grouped::Matcher::start(id, &people, values_needed(&f), dummies, dp.is_none())
                .map_err(psi_error)?;
        let k = self.crypto_k(&f);
        self.store(
            id,
            State::Matcher {
                matcher: Box::new(matcher),
                fragment: Box::new(f),
                dp: dp.map(Box::new),
                k,
            },
        )?;
        Ok(m1)
    }

    /// The grouper's people, each with the indices of the groups it is in
    /// (under differential privacy exactly the public groups, each person
    /// in at most the rule's number of them), hashed; the groups' labels
    /// and their number.
    #[allow(clippy::type_complexity)]
    async fn grouped_people(
        &self,
        f: &CryptoFragment,
        dp: Option<&CryptoDp>,
    ) -> Result<(Vec<(RistrettoPoint, Vec<u32>)>, Vec<ArrayRef>, usize), NodeError> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let groups = match (dp, airlock_guard::crypto_public_groups(&self.collab, f)?) {
            (Some(_), Some(lists)) => Groups::All(lists),
            (Some(_), None) => {
                return Err(NodeError::Refused(
                    Refusal::new(
                        Control::DifferentialPrivacy,
                        "under differential privacy, crypto mode releases every group: the grouped table needs a rule with public keys",
                    )
                    .table(&f.grouped_side().table, None),
                ))
            }
            (None, _) => Groups::Seen(vec![None; f.group_columns.len()]),
        };
        let (labels, members) = self.group_rows(f, f.grouped_side(), groups).await?;
        let mut of: HashMap<&str, Vec<u32>> = HashMap::new();
        for (g, m) in members.iter().enumerate() {
            for id in m {
                of.entry(id.as_str()).or_default().push(g as u32);
            }
        }
        if let Some(dp) = dp {
            let mut rng = rand::rngs::StdRng::from_entropy();
            for gs in of.values_mut() {
                if gs.len() > dp.max_groups {
                    gs.shuffle(&mut rng);
                    gs.truncate(dp.max_groups);
                }
            }
        }
        let ids: Vec<&str> = of.keys().copied().collect();
        let people: Vec<(RistrettoPoint, Vec<u32>)> = self
            .hash_ids(&ids)?
            .into_iter()
            .zip(ids.iter().map(|i| of[i].clone()))
            .collect();
        Ok((people, labels, members.len()))
    }

    /// The grouper's step 2 by the responder's groups: its people per
    /// group, hashed and blinded, with dummies.
    pub(super) async fn psi_respond(
        &self,
        f: CryptoFragment,
        m1: &[u8],
    ) -> Result<Vec<u8>, NodeError> {
        // Checked by the caller, before the message's tag.
        let dp = self.crypto_dp(&f)?;
        let (people, labels, groups) = self.grouped_people(&f, dp.as_ref()).await?;
        let noise = self.dummy_noise(&f, dp.as_ref())?;
        let draw = || {
            noise
                .0
                .dummies(noise.1)
                .map_err(|e| NodeError::Local(e.to_string()))
        };
        let padding = Padding {
            matched: draw()?,
            unmatched_mine: draw()?,
            unmatched_theirs: draw()?,
            groups: empty_groups(&f, dp.as_ref())?,
        };
        let (grouper, m2, _) =
            grouped::Grouper::respond(m1, &people, groups, values_needed(&f), padding)
                .map_err(psi_error)?;
        let id = session_of(m1)?;
        let k = self.crypto_k(&f);
        self.store(
            id,
            State::Grouper {
                grouper: Box::new(grouper),
                fragment: Box::new(f),
                dp: dp.map(Box::new),
                labels,
                k,
            },
        )?;
        Ok(m2)
    }

    /// By the asker's groups, the responder's step 1 (it matches): its
    /// people (its own filter and consent applied), hashed and blinded,
    /// with dummies.
    pub(super) async fn psi_start_tagged(
        &self,
        session: &str,
        f: CryptoFragment,
    ) -> Result<Vec<u8>, NodeError> {
        // Checked by the caller, before anything is read.
        let id = session_id(session)?;
        let dp = self.crypto_dp(&f)?;
        let (ids, _) = self.people_with_values(&f, dp.as_ref()).await?;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let people = self.hash_ids(&refs)?;
        let noise = self.dummy_noise(&f, dp.as_ref())?;
        let dummies = noise
            .0
            .dummies(noise.1)
            .map_err(|e| NodeError::Local(e.to_string()))?;
        let (matcher, m1) = tagged::Matcher::start(id, &people, dummies).map_err(psi_error)?;
        let k = self.crypto_k(&f);
        self.store(
            id,
            State::TaggedMatcher {
                matcher: Box::new(matcher),
                fragment: Box::new(f),
                dp: dp.map(Box::new),
                k,
            },
        )?;
        Ok(m1)
    }

    /// By the asker's groups, the asker's step 2 (it groups): its people
    /// tagged with their groups under encryption, each tag proved 0 or 1
    /// (under DP at most the rule's number per person), with dummies.
    pub(super) async fn psi_respond_tagged(
        &self,
        f: CryptoFragment,
        m1: &[u8],
    ) -> Result<Vec<u8>, NodeError> {
        // Checked by the caller, before the message's tag.
        let dp = self.crypto_dp(&f)?;
        let (people, labels, groups) = self.grouped_people(&f, dp.as_ref()).await?;
        let noise = self.dummy_noise(&f, dp.as_ref())?;
        let draw = || {
            noise
                .0
                .dummies(noise.1)
                .map_err(|e| NodeError::Local(e.to_string()))
        };
        let padding = tagged::Padding {
            unmatched_mine: draw()?,
            groups: empty_tag_groups(&f, dp.as_ref(), groups),
        };
        let cap = dp.as_ref().map(|d| d.max_groups);
        let (grouper, m2) =
            tagged::Grouper::respond(m1, &people, groups, cap, padding, dp.is_none())
                .map_err(psi_error)?;
        let id = session_of(m1)?;
        let k = self.crypto_k(&f);
        self.store(
            id,
            State::TaggedGrouper {
                grouper: Box::new(grouper),
                fragment: Box::new(f),
                labels,
                k,
            },
        )?;
        Ok(m2)
    }

    pub(super) fn psi_result(
        &self,
        f: &CryptoFragment,
        labels: &[ArrayRef],
        k: u64,
        groups: &[airlock_psi::GroupResult],
    ) -> Result<Vec<u8>, NodeError> {
        // Under differential privacy the values are noisy (`i64` bits) and
        // the responder chose the groups by partition selection; otherwise
        // the asker's node applies its own k too.
        let dp = self.crypto_dp(f)?;
        let released: Vec<&airlock_psi::GroupResult> = groups
            .iter()
            .filter(|g| dp.is_some() || g.count >= k)
            .collect();
        // Noisy values travel as i64 bits; exact ones are small enough
        // that the same reading holds.
        let bounds = dp.as_ref().and_then(|d| d.bounds);
        let idx = UInt32Array::from(released.iter().map(|g| g.group).collect::<Vec<_>>());
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (name, o) in &f.outputs {
            let (field, array): (Field, ArrayRef) = match o {
                CryptoOutput::Group(i) => {
                    let l = labels.get(*i).ok_or(NodeError::Execution)?;
                    let a = take(l, &idx, None).map_err(|_| NodeError::Execution)?;
                    (Field::new(name, a.data_type().clone(), true), a)
                }
                CryptoOutput::Count => (
                    Field::new(name, DataType::Int64, false),
                    Arc::new(Int64Array::from(
                        released.iter().map(|g| g.count as i64).collect::<Vec<_>>(),
                    )),
                ),
                CryptoOutput::Sum => (
                    Field::new(name, DataType::Int64, true),
                    Arc::new(Int64Array::from(
                        released
                            .iter()
                            .map(|g| g.sums.first().map(|s| *s as i64))
                            .collect::<Vec<_>>(),
                    )),
                ),
                CryptoOutput::Avg => (
                    Field::new(name, DataType::Float64, true),
                    Arc::new(Float64Array::from(
                        released
                            .iter()
                            .map(|g| match g.sums.as_slice() {
                                [s, n] if (*n as i64) > 0 => {
                                    let avg = (*s as i64) as f64 / (*n as i64) as f64;
                                    // A noisy sum over a noisy count, clamped.
                                    Some(match bounds {
                                        Some((lo, hi)) => avg.clamp(lo as f64, hi as f64),
                                        None => avg,
                                    })
                                }
                                _ => None,
                            })
                            .collect::<Vec<_>>(),
                    )),
                ),
            };
            fields.push(field);
            columns.push(array);
        }
        // Under differential privacy the result says how noisy each
        // column is and what it cost, as executor-mode releases do.
        let mut metadata = HashMap::new();
        if let Some(dp) = &dp {
            let note = |column: &str,
                        mechanism: &str,
                        m: &airlock_privacy::Laplace,
                        also: Option<&airlock_privacy::Laplace>| {
                airlock_guard::dp::NoiseNote {
                    column: column.to_string(),
                    mechanism: mechanism.to_string(),
                    scale: m.scale(),
                    interval95: std::iter::once(m.interval95())
                        .chain(also.map(airlock_privacy::Laplace::interval95))
                        .collect(),
                }
            };
            let mut notes = Vec::new();
            for (name, o) in &f.outputs {
                match (o, &dp.sum, &dp.rows) {
                    (CryptoOutput::Count, _, _) => {
                        notes.push(note(name, "discrete Laplace", &dp.count, None))
                    }
                    (CryptoOutput::Sum, Some(s), _) => {
                        notes.push(note(name, "discrete Laplace", s, None))
                    }
                    (CryptoOutput::Avg, Some(s), Some(r)) => notes.push(note(
                        name,
                        "noisy sum / noisy count (discrete Laplace on each)",
                        s,
                        Some(r),
                    )),
                    _ => {}
                }
            }
            let json = |e: serde_json::Error| NodeError::Local(e.to_string());
            metadata.insert(
                airlock_protocol::metadata::NOISE.to_string(),
                serde_json::to_string(&notes).map_err(json)?,
            );
            metadata.insert(
                airlock_protocol::metadata::DP_COST.to_string(),
                serde_json::to_string(&dp.cost).map_err(json)?,
            );
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|_| NodeError::Execution)?;
        airlock_protocol::wire::encode_batches(&schema, &[batch])
            .map_err(|_| NodeError::Local("could not encode the result".into()))
    }
}

/// How many empty groups the grouper adds. Under differential privacy the
/// groups are the rule's public keys, and a query that groups by nothing
/// has one group: neither hides anything. Otherwise empty groups hide the
/// exact number of the grouper's groups (Laplace of scale 1 shifted for
/// delta 1e-6: about 14 on average; each costs k zero tests and their
/// proofs, and by the asker's groups a tag per person of the asker).
fn empty_groups(f: &CryptoFragment, dp: Option<&CryptoDp>) -> Result<u64, NodeError> {
    if dp.is_some() || f.group_columns.is_empty() {
        return Ok(0);
    }
    airlock_privacy::Laplace::for_epsilon(1.0, 1.0)
        .and_then(|m| m.dummies(1e-6))
        .map_err(|e| NodeError::Local(e.to_string()))
}

/// How many empty groups the grouper adds by the asker's groups, where
/// each costs a tag and its proof per person of the asker (120,000 proofs
/// a group in the demo), so the Laplace padding of [`empty_groups`] (about
/// 14 groups) would cost more than the tags of the demo's six real ones
/// twice over: enough to make the number of groups a power of two (at
/// least 2). The responder learns that power, not the number, and it
/// learns anyway which groups pass k (from the asker's proofs), so what
/// the padding hides is the number of groups below k, to within a factor
/// of two. At most [`grouped::MAX_EMPTY_GROUPS`] (past 1,024 groups the
/// number is not always a power of two). None under differential privacy
/// (public groups) or for a query that groups by nothing (one group).
fn empty_tag_groups(f: &CryptoFragment, dp: Option<&CryptoDp>, real: usize) -> u64 {
    if dp.is_some() || f.group_columns.is_empty() {
        return 0;
    }
    (real.max(2).next_power_of_two() - real).min(grouped::MAX_EMPTY_GROUPS) as u64
}
