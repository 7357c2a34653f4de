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

use crate::campaign::Campaign;
use crate::error::{Error, Result};
use crate::keys::CampaignKeys;
use crate::lease::{self, Ownership};
use crate::store::{SMALL_COUNTER_LIMIT, Store, decode_small_counter, read_counter};
use jiff::Timestamp;

/// 2^40: above `MAX_STOCK` plus any number of operations in flight.
pub const OFFSET: i64 = 1 << 40;

/// Transitions a brake may have: the counter is read with `get` beside other
/// keys, and a held counter carries `2^40` per level (2^60 at most).
pub const MAX_TRANSITIONS: i64 = SMALL_COUNTER_LIMIT - 1;

fn level(counter: i64) -> i64 {
    counter.div_euclid(OFFSET)
}

/// Whether a held counter (as an operation's increment returned it) is braked.
pub fn is_engaged(counter: i64) -> bool {
    level(counter) % 2 == 1
}

/// The count in a held counter, without its level.
pub fn count(counter: i64) -> i64 {
    counter.rem_euclid(OFFSET)
}

/// Whether a transition count means engaged.
pub fn is_on(transitions: i64) -> bool {
    transitions % 2 == 1
}

/// Whether a transition counter, as `get` returned it, means engaged.
pub fn is_on_stored(transitions: Option<&[u8]>) -> bool {
    transitions
        .and_then(decode_small_counter)
        .is_some_and(is_on)
}

/// One brake of one campaign.
pub struct Brake {
    keys: CampaignKeys,
    shards: u32,
    /// What engaging and releasing it are called, for the error at the limit.
    called: &'static str,
    transitions: String,
    counter: fn(&CampaignKeys, u32) -> String,
    step: fn(&CampaignKeys, u32, i64) -> String,
}

impl Brake {
    /// Pauses claims: holds the stock shard counters.
    pub fn claims(campaign: &Campaign) -> Brake {
        let keys = CampaignKeys::new(&campaign.id);
        Brake {
            transitions: keys.brake(),
            keys,
            shards: campaign.shard_count(),
            called: "paused and resumed",
            counter: CampaignKeys::claimed,
            step: CampaignKeys::brake_step,
        }
    }

    /// Freezes redemptions: holds the redemption ledgers' position counters.
    pub fn redemptions(campaign: &Campaign) -> Brake {
        let keys = CampaignKeys::new(&campaign.id);
        Brake {
            transitions: keys.freeze(),
            keys,
            shards: campaign.shard_count(),
            called: "frozen and unfrozen",
            counter: |keys, shard| keys.redemptions(shard).counter().to_owned(),
            step: CampaignKeys::freeze_step,
        }
    }

    /// Whether it is engaged now (one read).
    pub async fn is_on(&self, store: &impl Store) -> Result<bool> {
        Ok(is_on(read_counter(store, &self.transitions).await?))
    }

    /// Engages (`on`) or releases it on every counter before answering.
    pub async fn set(&self, store: &impl Store, on: bool, now: Timestamp) -> Result<()> {
        self.request(store, on).await?;
        self.apply(store, now).await
    }

    /// Makes the transition counter say `on`.
    pub async fn request(&self, store: &impl Store, on: bool) -> Result<()> {
        let mut transitions = read_counter(store, &self.transitions).await?;
        while is_on(transitions) != on {
            if transitions >= MAX_TRANSITIONS {
                return Err(Error::invalid(
                    "campaign",
                    format!("has been {} {MAX_TRANSITIONS} times", self.called),
                ));
            }
            transitions = store.increment(&self.transitions, 1).await?;
        }
        Ok(())
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
