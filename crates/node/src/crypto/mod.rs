//! Crypto mode on the node: its side of the private set intersection.
//!
//! The node checks the [`CryptoFragment`] against its own rules, reads its
//! own rows (consent applied, normalised, in place), hashes identities to
//! the group (keyed by the collaboration secret, cached in memory), and
//! runs its protocol steps with fresh secrets kept only for the session,
//! each step once, every message tagged for the other node with a key
//! derived from the collaboration secret (the hub cannot forge one). The
//! asker's node
//! turns the released groups into the result; the responder's node
//! applies k itself from its own copy of the policy.

mod auth;
mod dp;
mod rows;
mod session;
mod steps;
mod verify;

use std::collections::HashMap;

use airlock_protocol::{CryptoRole, Message, PsiRequest, PsiResponse};

use crate::{Node, NodeError};
use auth::*;
use rows::*;
pub use session::Sessions;
use session::*;

/// The member whose node matches (the matcher of
/// `airlock_psi::grouped`): the side that does not group. It never sees a
/// group; the other node (the grouper) never sees a match.
pub(super) fn matcher_of(f: &airlock_protocol::CryptoFragment) -> CryptoRole {
    match f.groups_of {
        CryptoRole::Asker => CryptoRole::Responder,
        CryptoRole::Responder => CryptoRole::Asker,
    }
}

impl Node {
    /// Under differential privacy, debits this node's own ledger for its
    /// side of a crypto-mode query, before it reads its people (the first
    /// step each node runs: start for the matcher, respond for the grouper).
    async fn debit_crypto(&self, f: &airlock_protocol::CryptoFragment) -> Result<(), NodeError> {
        crate::verify::query_id(&f.query)?;
        if let Some(cost) = airlock_guard::crypto_cost(&self.collab, f)? {
            let mine = match f.role {
                CryptoRole::Asker => &f.asker.table,
                CryptoRole::Responder => &f.responder.table,
            };
            self.debit(mine, &f.querier, &f.query, cost).await?;
        }
        Ok(())
    }

    /// Runs one step of a crypto-mode query (JSON [`PsiRequest`] in, JSON
    /// [`PsiResponse`] out): the node's whole crypto-mode interface. Each
    /// step runs once, in order: the session's state is taken out, and put
    /// back only if a step follows. The node that matches sends messages 1,
    /// 3, 5 and 8, the node that groups 2, 4, 6 and 7; the asker's node
    /// makes the result (from message 6 when it matched, from message 8
    /// when it grouped).
    pub async fn psi(&self, request: &[u8]) -> Result<Vec<u8>, NodeError> {
        let req: PsiRequest = serde_json::from_slice(request)
            .map_err(|e| NodeError::BadFragment(format!("not a crypto-mode step: {e}")))?;
        let key = self.psi_mac_key()?;
        let wrong = |what: &str| {
            NodeError::BadFragment(format!(
                "this node is not the {what} of that session, or that step has run"
            ))
        };
        let out = match req {
            PsiRequest::Start { session, fragment } => {
                // The node's own rules first: a refusal names the rule.
                self.verify_crypto(&fragment, matcher_of(&fragment))?;
                self.debit_crypto(&fragment).await?;
                let digest = fragment_digest(&fragment)?;
                let from = fragment.role;
                let m1 = match fragment.groups_of {
                    CryptoRole::Asker => self.psi_start_tagged(&session, fragment).await?,
                    CryptoRole::Responder => self.psi_start(&session, fragment).await?,
                };
                sealed(&key, from, 1, &digest, m1)
            }
            PsiRequest::Respond { fragment, message } => {
                self.verify_crypto(&fragment, fragment.groups_of)?;
                let digest = fragment_digest(&fragment)?;
                let m1 = opened(&key, matcher_of(&fragment), 1, &digest, &message)?;
                // Debited once the other node's message is authentic.
                self.debit_crypto(&fragment).await?;
                let from = fragment.role;
                let m2 = match fragment.groups_of {
                    CryptoRole::Asker => self.psi_respond_tagged(fragment, &m1).await?,
                    CryptoRole::Responder => self.psi_respond(fragment, &m1).await?,
                };
                sealed(&key, from, 2, &digest, m2)
            }
            PsiRequest::Reblind { session, message } => match self.take(&session)? {
                State::Matcher {
                    mut matcher,
                    fragment,
                    dp,
                    k,
                } => {
                    let digest = fragment_digest(&fragment)?;
                    let m2 = opened(&key, fragment.groups_of, 2, &digest, &message)?;
                    let (m3, _, _) = matcher.match_items(&m2).map_err(psi_error)?;
                    let from = fragment.role;
                    self.store(
                        session_id(&session)?,
                        State::Matcher {
                            matcher,
                            fragment,
                            dp,
                            k,
                        },
                    )?;
                    sealed(&key, from, 3, &digest, m3)
                }
                State::TaggedMatcher {
                    mut matcher,
                    fragment,
                    dp,
                    k,
                } => {
                    let digest = fragment_digest(&fragment)?;
                    let m2 = opened(&key, fragment.groups_of, 2, &digest, &message)?;
                    let from = fragment.role;
                    // Under differential privacy every public group is
                    // released with this node's noise right away.
                    let groups = match airlock_guard::crypto_public_groups(&self.collab, &fragment)?
                    {
                        Some(lists) if dp.is_some() => Some(lists.iter().map(Vec::len).product()),
                        _ => None,
                    };
                    let cap = dp.as_ref().map(|d| d.max_groups);
                    let noise = || {
                        dp.as_ref()
                            .ok_or(airlock_psi::PsiError::Noise("no noise".into()))?
                            .count
                            .release(0)
                            .map_err(|e| airlock_psi::PsiError::Noise(e.to_string()))
                    };
                    let with_noise: Option<
                        &(dyn Fn() -> Result<i64, airlock_psi::PsiError> + Sync),
                    > = dp.as_ref().map(|_| &noise as _);
                    let (m3, _) = matcher
                        .match_and_count(&m2, k, cap, groups, with_noise)
                        .map_err(psi_error)?;
                    if dp.is_none() {
                        self.store(
                            session_id(&session)?,
                            State::TaggedMatcher {
                                matcher,
                                fragment,
                                dp,
                                k,
                            },
                        )?;
                    }
                    sealed(&key, from, 3, &digest, m3)
                }
                _ => return Err(wrong("matcher")),
            },
            PsiRequest::Finish { session, message } => {
                let State::Grouper {
                    mut grouper,
                    fragment,
                    dp,
                    labels,
                    k,
                } = self.take(&session)?
                else {
                    return Err(wrong("grouper"));
                };
                let digest = fragment_digest(&fragment)?;
                let from = fragment.role;
                let m3 = opened(&key, matcher_of(&fragment), 3, &digest, &message)?;
                grouper.tally(&m3).map_err(psi_error)?;
                match &dp {
                    // Under differential privacy every (public) group is
                    // released with this node's noise: no zero tests.
                    Some(dp) => {
                        let noise = |_: u32| dp.noise_all();
                        let (m6, all) = grouper.release_all(&noise).map_err(psi_error)?;
                        sealed(&key, from, 6, &digest, with_labels(m6, &labels, &all)?)
                    }
                    None => {
                        let m4 = grouper.zero_tests(k).map_err(psi_error)?;
                        self.store(
                            session_id(&session)?,
                            State::Grouper {
                                grouper,
                                fragment,
                                dp,
                                labels,
                                k,
                            },
                        )?;
                        sealed(&key, from, 4, &digest, m4)
                    }
                }
            }
            PsiRequest::Check { session, message } => match self.take(&session)? {
                State::Matcher {
                    mut matcher,
                    fragment,
                    dp,
                    k,
                } => {
                    let digest = fragment_digest(&fragment)?;
                    let m4 = opened(&key, fragment.groups_of, 4, &digest, &message)?;
                    let m5 = matcher.passes(&m4, k).map_err(psi_error)?;
                    let from = fragment.role;
                    self.store(
                        session_id(&session)?,
                        State::Matcher {
                            matcher,
                            fragment,
                            dp,
                            k,
                        },
                    )?;
                    sealed(&key, from, 5, &digest, m5)
                }
                State::TaggedGrouper {
                    mut grouper,
                    fragment,
                    labels,
                    k,
                } => {
                    let digest = fragment_digest(&fragment)?;
                    let m3 = opened(&key, matcher_of(&fragment), 3, &digest, &message)?;
                    let m4 = grouper.passes(&m3, k).map_err(psi_error)?;
                    let from = fragment.role;
                    self.store(
                        session_id(&session)?,
                        State::TaggedGrouper {
                            grouper,
                            fragment,
                            labels,
                            k,
                        },
                    )?;
                    sealed(&key, from, 4, &digest, m4)
                }
                _ => return Err(wrong("asker")),
            },
            PsiRequest::Release { session, message } => match self.take(&session)? {
                State::Grouper {
                    mut grouper,
                    fragment,
                    labels,
                    ..
                } => {
                    let digest = fragment_digest(&fragment)?;
                    let m5 = opened(&key, matcher_of(&fragment), 5, &digest, &message)?;
                    let (m6, passed) = grouper.release_passing(&m5).map_err(psi_error)?;
                    sealed(
                        &key,
                        fragment.role,
                        6,
                        &digest,
                        with_labels(m6, &labels, &passed)?,
                    )
                }
                State::TaggedMatcher {
                    mut matcher,
                    fragment,
                    ..
                } => {
                    let digest = fragment_digest(&fragment)?;
                    let m4 = opened(&key, fragment.groups_of, 4, &digest, &message)?;
                    let (m5, _) = matcher.release_passing(&m4).map_err(psi_error)?;
                    sealed(&key, fragment.role, 5, &digest, m5)
                }
                _ => return Err(wrong("responder")),
            },
            PsiRequest::Result { session, message } => match self.take(&session)? {
                State::Matcher {
                    mut matcher,
                    fragment,
                    k,
                    ..
                } if fragment.role == CryptoRole::Asker => {
                    let digest = fragment_digest(&fragment)?;
                    let m6 = opened(&key, fragment.groups_of, 6, &digest, &message)?;
                    let (m6, labels) = without_labels(&m6, fragment.group_columns.len())?;
                    let groups = matcher.finish(m6).map_err(psi_error)?;
                    // Each released group by its row in the labels sent.
                    let rows: HashMap<u32, u32> = labels
                        .0
                        .iter()
                        .enumerate()
                        .map(|(row, g)| (*g, row as u32))
                        .collect();
                    let groups = groups
                        .into_iter()
                        .map(|mut g| {
                            g.group = *rows.get(&g.group).ok_or_else(|| {
                                NodeError::BadFragment(
                                    "the responder released a group without its labels".into(),
                                )
                            })?;
                            Ok(g)
                        })
                        .collect::<Result<Vec<_>, NodeError>>()?;
                    self.psi_result(&fragment, &labels.1, k, &groups)?
                }
                State::TaggedGrouper {
                    mut grouper,
                    fragment,
                    labels,
                    k,
                } => {
                    let digest = fragment_digest(&fragment)?;
                    // The release is message 3 under differential privacy
                    // (no zero tests), 5 without.
                    let step = if self.crypto_dp(&fragment)?.is_some() {
                        3
                    } else {
                        5
                    };
                    let m5 = opened(&key, matcher_of(&fragment), step, &digest, &message)?;
                    let groups = grouper.finish(&m5).map_err(psi_error)?;
                    self.psi_result(&fragment, &labels, k, &groups)?
                }
                _ => return Err(wrong("asker")),
            },
        };
        serde_json::to_vec(&PsiResponse {
            message: Message(out),
        })
        .map_err(|e| NodeError::Local(e.to_string()))
    }
}
