//! Brakes that stop an operation on every host, with increments only: the
//! claims brake (pause and resume) and the redemptions brake (freeze and
//! unfreeze).
//!
//! A brake's transition counter counts transitions: odd is engaged. A request
//! to engage or release it first increments the counter until its own
//! increment lands on the parity it wants; the last increment wins, as the
//! last write would.
//!
//! Every counter the brake holds (a stock shard's, or a redemptions ledger's
//! positions) carries it too: it is its count plus `level × 2^40`, and it is
//! braked while its level is odd, so an operation's own increment tells it
//! whether it met the brake. A counter moves one level at a time: the request
//! that owns step `level + 1` of it (a [lease](crate::lease), so a dead
//! owner's step is taken over) adds 2^40 if the counter is still below it.
//! Every request brings every counter to the transition counter's parity
//! before it answers. So levels only grow, each step is applied once, a
//! counter's parity changes only towards what the latest transition wants,
//! and the count part never goes negative: no interleaving releases a counter
//! twice, and once a request has answered engaged no operation on any host
//! gets past the brake until a release.
//!
//! The claims brake can also be closed for good (the claim window ended
//! early): the closer adds [`CLOSED`] to its transition counter, which then
//! reads engaged whatever its parity, so a later or racing resume can never
//! release it; claims read it and answer `campaign_not_active`.
//!
//! Each transition is recorded once, under its number, with who asked and
//! why (a [`Note`]): the transition counter's increment hands out the number.

use crate::campaign::Campaign;
use crate::error::{Error, Result};
use crate::keys::CampaignKeys;
use crate::lease::{self, Ownership};
use crate::store::{SMALL_COUNTER_LIMIT, Store, decode_small_counter, read_counter};
use crate::time::serde_rfc3339;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The longest `changed_by` and `reason` accepted.
pub const MAX_CHANGED_BY_LEN: usize = super::dating::MAX_CHANGED_BY_LEN;
pub const MAX_REASON_LEN: usize = 500;

/// Transitions of each brake a history shows: the latest.
pub const HISTORY: i64 = 100;

/// 2^40: above `MAX_STOCK` plus any number of operations in flight.
pub const OFFSET: i64 = 1 << 40;

/// What a close adds to the claims brake's transition counter: above any
/// number of transitions, and closers racing each other stay far below
/// `SMALL_COUNTER_LIMIT` (the counter is read with `get` beside other keys).
pub const CLOSED: i64 = 1_000;

/// Transitions a brake may have (499 pauses and as many resumes), below
/// [`CLOSED`]; a held counter carries `2^40` per level, far from overflow.
pub const MAX_TRANSITIONS: i64 = CLOSED - 1;

const _: () = assert!(CLOSED * 100 < SMALL_COUNTER_LIMIT);

fn level(counter: i64) -> i64 {
    // Centred, so a count may go below zero (stock an operator added: see
    // `limits`) without changing the level.
    (counter + OFFSET / 2).div_euclid(OFFSET)
}

/// Whether a held counter (as an operation's increment returned it) is braked.
pub fn is_engaged(counter: i64) -> bool {
    level(counter) % 2 == 1
}

/// The count in a held counter, without its level.
pub fn count(counter: i64) -> i64 {
    counter - level(counter) * OFFSET
}

/// Whether a transition count means engaged.
pub fn is_on(transitions: i64) -> bool {
    is_closed(transitions) || transitions % 2 == 1
}

/// Whether a transition count means closed for good.
pub fn is_closed(transitions: i64) -> bool {
    transitions >= CLOSED
}

/// Whether a transition counter, as `get` returned it, means engaged.
pub fn is_on_stored(transitions: Option<&[u8]>) -> bool {
    transitions
        .and_then(decode_small_counter)
        .is_some_and(is_on)
}

/// Whether a transition counter, as `get` returned it, means closed.
pub fn is_closed_stored(transitions: Option<&[u8]>) -> bool {
    transitions
        .and_then(decode_small_counter)
        .is_some_and(is_closed)
}

/// Who moves a brake and why: the optional body of a pause, resume, freeze
/// or unfreeze, recorded with each transition the request makes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Note {
    #[serde(default)]
    pub changed_by: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Note {
    /// Trimmed, with empty values as absent; `invalid_request` if too long.
    pub fn checked(self) -> Result<Note> {
        Ok(Note {
            changed_by: optional_text(self.changed_by, "changed_by", MAX_CHANGED_BY_LEN)?,
            reason: optional_text(self.reason, "reason", MAX_REASON_LEN)?,
        })
    }

    /// The record of `brake`'s transition numbered `transition`, made at `at`.
    fn record(&self, brake: Kind, transition: i64, action: Action, at: Timestamp) -> Transition {
        Transition {
            brake,
            transition,
            action,
            at,
            changed_by: self.changed_by.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// An optional free-text field for the record: trimmed, blank as absent,
/// `invalid_request` naming `field` if over `max` characters.
pub fn optional_text(value: Option<String>, field: &str, max: usize) -> Result<Option<String>> {
    match value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
        Some(v) if v.chars().count() > max => Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        )),
        v => Ok(v),
    }
}

/// Which brake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Claims,
    Redemptions,
}

/// What a transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Pause,
    Resume,
    Freeze,
    Unfreeze,
    /// The claim window closed early, for good.
    Close,
}

/// One transition of a brake, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub brake: Kind,
    /// Its number: odd ones engage the brake, even ones release it.
    pub transition: i64,
    pub action: Action,
    #[serde(with = "serde_rfc3339")]
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One brake of one campaign.
pub struct Brake {
    kind: Kind,
    keys: CampaignKeys,
    shards: u32,
    /// What engaging and releasing it are called, for the error at the limit.
    called: &'static str,
    transitions: String,
    counter: fn(&CampaignKeys, u32) -> String,
    step: fn(&CampaignKeys, u32, i64) -> String,
    record: fn(&CampaignKeys, i64) -> String,
}

impl Brake {
    /// Pauses claims: holds the stock shard counters.
    pub fn claims(campaign: &Campaign) -> Brake {
        let keys = CampaignKeys::new(&campaign.id);
        Brake {
            kind: Kind::Claims,
            transitions: keys.brake(),
            keys,
            shards: campaign.shard_count(),
            called: "paused and resumed",
            counter: CampaignKeys::claimed,
            step: CampaignKeys::brake_step,
            record: CampaignKeys::brake_record,
        }
    }

    /// Freezes redemptions: holds the redemption ledgers' position counters.
    pub fn redemptions(campaign: &Campaign) -> Brake {
        let keys = CampaignKeys::new(&campaign.id);
        Brake {
            kind: Kind::Redemptions,
            transitions: keys.freeze(),
            keys,
            shards: campaign.shard_count(),
            called: "frozen and unfrozen",
            counter: |keys, shard| keys.redemptions(shard).counter().to_owned(),
            step: CampaignKeys::freeze_step,
            record: CampaignKeys::freeze_record,
        }
    }

    /// Whether it is engaged now (one read).
    pub async fn is_on(&self, store: &impl Store) -> Result<bool> {
        Ok(is_on(read_counter(store, &self.transitions).await?))
    }

    /// Engages (`on`) or releases it on every counter before answering.
    pub async fn set(
        &self,
        store: &impl Store,
        on: bool,
        note: &Note,
        now: Timestamp,
    ) -> Result<()> {
        self.request(store, on, note, now).await?;
        self.apply(store, now).await
    }

    /// Makes the transition counter say `on`, recording each transition it
    /// makes. A transition whose request died before its record has none.
    pub async fn request(
        &self,
        store: &impl Store,
        on: bool,
        note: &Note,
        now: Timestamp,
    ) -> Result<()> {
        let mut transitions = read_counter(store, &self.transitions).await?;
        while is_on(transitions) != on {
            if is_closed(transitions) {
                return Err(Error::CampaignNotActive);
            }
            if transitions >= MAX_TRANSITIONS {
                return Err(Error::invalid(
                    "campaign",
                    format!("has been {} {MAX_TRANSITIONS} times", self.called),
                ));
            }
            transitions = store.increment(&self.transitions, 1).await?;
            // Numbered apart from closes: a racing close may have added CLOSED.
            let number = transitions % CLOSED;
            let record = note.record(self.kind, number, self.action(is_on(transitions)), now);
            let key = (self.record)(&self.keys, number);
            store.set(&key, &super::encode(&record)).await?;
        }
        Ok(())
    }

    /// Closes the claims brake for good, recorded under `c:{id}:closes:{k}`
    /// before the counter moves (a record whose closer died before is
    /// harmless: the view reads the counter), then engages it on every
    /// counter before answering. Closing a closed brake changes nothing.
    pub async fn close(&self, store: &impl Store, note: &Note, now: Timestamp) -> Result<()> {
        if !is_closed(read_counter(store, &self.transitions).await?) {
            let k = store.increment(&self.keys.closes(), 1).await?;
            let record = note.record(self.kind, k, Action::Close, now);
            store
                .set(&self.keys.close_record(k), &super::encode(&record))
                .await?;
            store.increment(&self.transitions, CLOSED).await?;
        }
        self.apply(store, now).await
    }

    fn action(&self, on: bool) -> Action {
        match (self.kind, on) {
            (Kind::Claims, true) => Action::Pause,
            (Kind::Claims, false) => Action::Resume,
            (Kind::Redemptions, true) => Action::Freeze,
            (Kind::Redemptions, false) => Action::Unfreeze,
        }
    }

    /// The keys of its latest recorded transitions (at most [`HISTORY`]).
    async fn latest(&self, store: &impl Store) -> Result<Vec<String>> {
        let count = read_counter(store, &self.transitions).await? % CLOSED;
        let mut keys: Vec<String> = ((count - HISTORY + 1).max(1)..=count)
            .map(|n| (self.record)(&self.keys, n))
            .collect();
        if self.kind == Kind::Claims {
            let closes = read_counter(store, &self.keys.closes()).await?;
            keys.extend((1..=closes.min(HISTORY)).map(|k| self.keys.close_record(k)));
        }
        Ok(keys)
    }

    /// Brings every counter to what the transition counter says;
    /// `RequestInProgress` while another request may still be moving one.
    pub async fn apply(&self, store: &impl Store, now: Timestamp) -> Result<()> {
        for shard in 0..self.shards {
            let counter = (self.counter)(&self.keys, shard);
            loop {
                let wanted = is_on(read_counter(store, &self.transitions).await?);
                let at = level(read_counter(store, &counter).await?);
                if (at % 2 == 1) == wanted {
                    break;
                }
                let step = (self.step)(&self.keys, shard, at + 1);
                match lease::own(store, &step, 1, now).await? {
                    Ownership::Owned(_) => {
                        // A lapsed owner of this step may have applied it.
                        if level(read_counter(store, &counter).await?) == at {
                            store.increment(&counter, OFFSET).await?;
                        }
                    }
                    Ownership::Busy | Ownership::Lapsed => return Err(Error::RequestInProgress),
                }
            }
        }
        Ok(())
    }
}

/// The latest transitions of both brakes of `campaign` (at most [`HISTORY`]
/// of each), and its closes, oldest first: four round trips.
pub async fn history(store: &impl Store, campaign: &Campaign) -> Result<Vec<Transition>> {
    let mut keys = Brake::claims(campaign).latest(store).await?;
    keys.extend(Brake::redemptions(campaign).latest(store).await?);
    let mut transitions = Vec::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(transitions);
    }
    // A number without a record is a transition in flight, or one whose
    // request died before writing it.
    for (key, bytes) in keys.iter().zip(store.get_many(&keys).await?) {
        if let Some(bytes) = bytes {
            transitions.push(super::decode::<Transition>(key, &bytes)?);
        }
    }
    transitions.sort_by_key(|t| (t.at, t.brake, t.transition));
    Ok(transitions)
}
