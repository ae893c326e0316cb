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

impl Node {
    /// Runs one step of a crypto-mode query (JSON [`PsiRequest`] in, JSON
    /// [`PsiResponse`] out): the node's whole crypto-mode interface. Each
    /// step runs once, in order: the session's state is taken out, and put
    /// back only if a step follows.
    pub async fn psi(&self, request: &[u8]) -> Result<Vec<u8>, NodeError> {
        let req: PsiRequest = serde_json::from_slice(request)
            .map_err(|e| NodeError::BadFragment(format!("not a crypto-mode step: {e}")))?;
        let key = self.psi_mac_key()?;
        use CryptoRole::{Asker as A, Responder as R};
        let wrong = |what: &str| {
            NodeError::BadFragment(format!(
                "this node is not the {what} of that session, or that step has run"
            ))
        };
        let out = match req {
            PsiRequest::Start { session, fragment } => {
                let digest = fragment_digest(&fragment)?;
                let m1 = match fragment.groups_of {
                    A => self.psi_start(&session, fragment).await?,
                    R => self.psi_start_grouped(&session, fragment).await?,
                };
                sealed(&key, A, 1, &digest, m1)
            }
            PsiRequest::Respond { fragment, message } => {
                // The node's own rules first: a refusal names the rule.
                self.verify_crypto(&fragment, CryptoRole::Responder)?;
                let digest = fragment_digest(&fragment)?;
                let m1 = opened(&key, A, 1, &digest, &message)?;
                let m2 = match fragment.groups_of {
                    A => self.psi_respond(fragment, &m1, digest).await?,
                    R => self.psi_respond_grouped(fragment, &m1, digest).await?,
                };
                sealed(&key, R, 2, &digest, m2)
            }
            PsiRequest::Reblind { session, message } => match self.take(&session)? {
                State::Asker {
                    mut asker,
                    fragment,
                    labels,
                    k,
                    reblinded: false,
                } => {
                    let digest = fragment_digest(&fragment)?;
                    let m2 = opened(&key, R, 2, &digest, &message)?;
                    let (m3, _) = asker.reblind(&m2).map_err(psi_error)?;
                    let m3 = sealed(&key, A, 3, &digest, m3);
                    self.store(
                        session_id(&session)?,
                        State::Asker {
                            asker,
                            fragment,
                            labels,
                            k,
                            reblinded: true,
                        },
                    )?;
                    m3
                }
                State::GroupedAsker {
                    mut asker,
                    fragment,
                    k,
                } => {
                    let digest = fragment_digest(&fragment)?;
                    let m2 = opened(&key, R, 2, &digest, &message)?;
                    let (m3, _, _) = asker.match_items(&m2).map_err(psi_error)?;
                    self.store(
                        session_id(&session)?,
                        State::GroupedAsker { asker, fragment, k },
                    )?;
                    sealed(&key, A, 3, &digest, m3)
                }
                _ => return Err(wrong("asker")),
            },
            PsiRequest::Finish { session, message } => match self.take(&session)? {
                State::Responder {
                    responder,
                    dp,
                    digest,
                } => {
                    let m3 = opened(&key, A, 3, &digest, &message)?;
                    let m4 = match dp {
                        None => responder.finish(&m3).map_err(psi_error)?.0,
                        Some(dp) => {
                            let release = |_: u32, count: u64| dp.release(count);
                            let policy = airlock_psi::Release {
                                max_groups_per_person: Some(dp.max_groups),
                                release: &release,
                            };
                            responder
                                .finish_with(&m3, Some(&policy))
                                .map_err(psi_error)?
                                .0
                        }
                    };
                    sealed(&key, R, 4, &digest, m4)
                }
                State::GroupedResponder {
                    mut responder,
                    dp,
                    digest,
                    labels,
                    groups,
                    k,
                } => {
                    let m3 = opened(&key, A, 3, &digest, &message)?;
                    responder.tally(&m3).map_err(psi_error)?;
                    match dp {
                        // Under differential privacy every (public) group
                        // is released with noise: no zero tests.
                        Some(dp) => {
                            let noise = |_: u32| dp.noise_all();
                            let (m6, all) = responder.release_all(&noise).map_err(psi_error)?;
                            debug_assert_eq!(all.len(), groups);
                            sealed(&key, R, 6, &digest, with_labels(m6, &labels, &all)?)
                        }
                        None => {
                            let m4 = responder.zero_tests(k).map_err(psi_error)?;
                            self.store(
                                session_id(&session)?,
                                State::GroupedResponder {
                                    responder,
                                    dp: None,
                                    digest,
                                    labels,
                                    groups,
                                    k,
                                },
                            )?;
                            sealed(&key, R, 4, &digest, m4)
                        }
                    }
                }
                _ => return Err(wrong("responder")),
            },
            PsiRequest::Check { session, message } => {
                let State::GroupedAsker {
                    mut asker,
                    fragment,
                    k,
                } = self.take(&session)?
                else {
                    return Err(wrong("asker"));
                };
                let digest = fragment_digest(&fragment)?;
                let m4 = opened(&key, R, 4, &digest, &message)?;
                let m5 = asker.passes(&m4, k).map_err(psi_error)?;
                self.store(
                    session_id(&session)?,
                    State::GroupedAsker { asker, fragment, k },
                )?;
                sealed(&key, A, 5, &digest, m5)
            }
            PsiRequest::Release { session, message } => {
                let State::GroupedResponder {
                    mut responder,
                    digest,
                    labels,
                    ..
                } = self.take(&session)?
                else {
                    return Err(wrong("responder"));
                };
                let m5 = opened(&key, A, 5, &digest, &message)?;
                let (m6, passed) = responder.release_passing(&m5).map_err(psi_error)?;
                sealed(&key, R, 6, &digest, with_labels(m6, &labels, &passed)?)
            }
            PsiRequest::Result { session, message } => match self.take(&session)? {
                State::Asker {
                    asker,
                    fragment,
                    labels,
                    k,
                    reblinded: true,
                } => {
                    let m4 = opened(&key, R, 4, &fragment_digest(&fragment)?, &message)?;
                    let groups = asker.finish(&m4).map_err(psi_error)?;
                    self.psi_result(&fragment, &labels, k, &groups)?
                }
                State::GroupedAsker {
                    mut asker,
                    fragment,
                    k,
                } => {
                    let m6 = opened(&key, R, 6, &fragment_digest(&fragment)?, &message)?;
                    let (m6, labels) = without_labels(&m6, fragment.group_columns.len())?;
                    let groups = asker.finish(m6).map_err(psi_error)?;
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
                _ => return Err(wrong("asker")),
            },
        };
        serde_json::to_vec(&PsiResponse {
            message: Message(out),
        })
        .map_err(|e| NodeError::Local(e.to_string()))
    }
}
