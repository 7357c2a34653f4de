//! Purging a campaign whose records have served their time.
//!
//! Once a campaign's claims are over, every coupon has ended and the sweep
//! has recorded it, and `retention_days` have passed since the last one
//! ended, an operator who has read its events to the end (the export: the
//! request names the last `next_cursor` as `exported_through`) may delete its
//! keys, in bounded calls with a cursor, like the sweep.
//!
//! The first call **seals** the campaign (an increment: no re-dating from
//! then on, see `dating::redate`) and waits a lease, so that a re-dating
//! which read no seal has written its rule by then (`crate::lease`). It then
//! checks again under the rule in force, writes the tombstone
//! (`c:{id}:purged`: the settings, the dating and who purged) and deletes
//! the campaign's record: from then on every reader finds the campaign and
//! its coupons gone, and the sweep passes it by. The walk works from the
//! tombstone: each coupon's derived keys (its generations' locks, endings,
//! cancels and turns; the holder's positions, wallet slot and the claim's
//! idempotency answer) go before the coupon, and the coupon before its index
//! slot, so a walk that dies goes on from what is left; then the ledgers,
//! position by position, each counter after its entries; then the rate
//! counters of the claim window; then every other key of the campaign, its
//! counters last. A counter is read with an increment of 0 (the only read
//! both stores encode alike) before anything it counts is deleted.
//!
//! What stays, by design: the tombstone, the seal and the creation lease
//! (`c:{id}:owner`, so the id is never taken again). What stays because no
//! key of the campaign leads to it: per user, the wallet's counter, the
//! slots of orders (an order may hold other campaigns' coupons too), the
//! idempotency answers of claims that issued no coupon, the positions of
//! users who got none, and a burst's last miss counters (`ops::coupons`);
//! lease attempts past the fourth (each needs an owner to have died).

use super::dating::Dating;
use super::events;
use super::expire::{month_walked, swept_markers};
use super::ledger::Ledger;
use super::{brake, decode, encode, get_array, load_campaign, with_dating};
use crate::campaign::{Campaign, CampaignId};
use crate::code::CouponCode;
use crate::coupon::CouponRecord;
use crate::error::{Error, Result};
use crate::expiry::YearMonth;
use crate::keys::{self, CampaignKeys, CouponKeys};
use crate::lease::{self, LEASE, attempt_key, seen_register};
use crate::store::{Store, decode_small_counter, read_counter};
use crate::time::{render, serde_rfc3339, serde_rfc3339_option};
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

/// Keys one call deletes, about: then it answers a cursor.
pub const KEYS_PER_CALL: u64 = 20_000;
/// Index slots, ledger positions or hours per round trip.
const SLOTS_PER_ROUND: i64 = 200;
const POSITIONS_PER_ROUND: i64 = 2_000;
const HOURS_PER_ROUND: i64 = 1_000;
const KEYS_PER_DELETE: usize = 4_096;
/// Lease attempts deleted per lease.
const ATTEMPTS: i64 = 4;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// The `next_cursor` of the last page of the campaign's events: proof
    /// they were read to the end. Needed until the campaign is sealed.
    #[serde(default)]
    pub exported_through: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub changed_by: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Sealed: deleting starts `retry_after_seconds` from now.
    Sealing,
    /// Deleting: call again with `next_cursor`.
    Purging,
    /// Every key this purge deletes is gone.
    Purged,
}

/// What one call did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purge {
    pub campaign_id: CampaignId,
    pub state: State,
    /// Keys this call deleted (absent ones included).
    pub deleted: u64,
    pub next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// What stays of a purged campaign, and what its walk works from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tombstone {
    campaign: Campaign,
    dating: Dating,
    /// Claim months that can hold coupons.
    first_month: YearMonth,
    last_month: YearMonth,
    /// The last second claims were taken in (an operator's close ends it early).
    claims_end: i64,
    /// Whether a claim rate ceiling was ever in force: rate counters exist.
    rated: bool,
    /// When the campaign's record was deleted: the walk starts a lease later.
    #[serde(with = "serde_rfc3339")]
    deleted_at: Timestamp,
    #[serde(default, with = "serde_rfc3339_option")]
    completed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Where a walk goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Index {
        month: YearMonth,
        shard: u32,
        slot: i64,
    },
    Ledger {
        index: usize,
        position: i64,
    },
    Rate {
        hour: i64,
    },
    Campaign {
        offset: usize,
    },
}

impl Cursor {
    fn parse(s: &str) -> Option<Cursor> {
        let mut parts = s.split('.');
        let cursor = match parts.next()? {
            "i" => Cursor::Index {
                month: YearMonth::parse(parts.next()?)?,
                shard: parts.next()?.parse().ok()?,
                slot: parts.next()?.parse().ok()?,
            },
            "l" => Cursor::Ledger {
                index: parts.next()?.parse().ok()?,
                position: parts.next()?.parse().ok()?,
            },
            "r" => Cursor::Rate {
                hour: parts.next()?.parse().ok()?,
            },
            "c" => Cursor::Campaign {
                offset: parts.next()?.parse().ok()?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(cursor)
    }

    fn render(self) -> String {
        match self {
            Cursor::Index { month, shard, slot } => format!("i.{month}.{shard}.{slot}"),
            Cursor::Ledger { index, position } => format!("l.{index}.{position}"),
            Cursor::Rate { hour } => format!("r.{hour}"),
            Cursor::Campaign { offset } => format!("c.{offset}"),
        }
    }
}

/// One bounded call of campaign `id`'s purge.
pub async fn purge(
    store: &impl Store,
    id: &CampaignId,
    request: PurgeRequest,
    now: Timestamp,
) -> Result<Purge> {
    let note = brake::Note {
        changed_by: request.changed_by.clone(),
        reason: request.reason.clone(),
    }
    .checked()?;
    let cursor = request
        .cursor
        .as_deref()
        .map(|s| {
            Cursor::parse(s)
                .ok_or_else(|| Error::invalid("cursor", "is not a cursor this service gave"))
        })
        .transpose()?;
    let keys = CampaignKeys::new(id);
    let [record, dating, tombstone] =
        get_array(store, [keys.record(), keys.dating(), keys.purged()]).await?;
    let answer = |state, deleted, next: Option<Cursor>, retry_after| Purge {
        campaign_id: id.clone(),
        state,
        deleted,
        next_cursor: next.map(Cursor::render),
        retry_after_seconds: retry_after,
    };
    let sealing = |since: Timestamp| {
        let ready = since + LEASE;
        let wait = ready.duration_since(now).as_secs().max(1);
        answer(
            State::Sealing,
            0,
            None,
            Some(u32::try_from(wait).unwrap_or(u32::MAX)),
        )
    };
    let tombstone = match tombstone {
        Some(bytes) => {
            let mut tombstone = decode::<Tombstone>(&keys.purged(), &bytes)?;
            // The call that wrote the tombstone died before deleting the record.
            if record.is_some() {
                tombstone.deleted_at = now;
                store.set(&keys.purged(), &encode(&tombstone)).await?;
                store.delete_many(&[keys.record()]).await?;
                return Ok(sealing(now));
            }
            tombstone
        }
        None => {
            let record = record.as_deref().ok_or(Error::CampaignNotFound)?;
            let (campaign, dating) = with_dating(&keys, record, dating.as_deref())?;
            due(store, &keys, &campaign, &dating, now).await?;
            exported(store, id, request.exported_through.as_deref(), now).await?;
            store.increment(&keys.purge(), 1).await?;
            let since = lease::first_seen(store, &keys.purge_since(), now).await?;
            if now < since + LEASE {
                return Ok(sealing(since));
            }
            // Read again: a re-dating that read no seal has written by now.
            let (campaign, dating) = load_campaign(store, id)
                .await?
                .ok_or(Error::CampaignNotFound)?;
            let tombstone = due(store, &keys, &campaign, &dating, now).await?;
            let rated = campaign.max_claims_per_second.is_some()
                || store.get(&keys.limits()).await?.is_some();
            let tombstone = Tombstone {
                rated,
                deleted_at: now,
                changed_by: note.changed_by,
                reason: note.reason,
                ..tombstone
            };
            // The tombstone first: a campaign is never gone without one.
            store.set(&keys.purged(), &encode(&tombstone)).await?;
            store.delete_many(&[keys.record()]).await?;
            return Ok(sealing(now));
        }
    };
    if tombstone.completed_at.is_some() {
        return Ok(answer(State::Purged, 0, None, None));
    }
    // Requests that read the campaign before it was deleted (the sweep among
    // them) have finished a lease after: nothing recreates what is deleted.
    if now < tombstone.deleted_at + LEASE {
        return Ok(sealing(tombstone.deleted_at));
    }
    let mut walk = Walk {
        store,
        keys,
        tombstone: &tombstone,
        deleted: 0,
    };
    let from = cursor.unwrap_or(Cursor::Index {
        month: tombstone.first_month,
        shard: 0,
        slot: 1,
    });
    let next = walk.run(from).await?;
    let deleted = walk.deleted;
    if next.is_none() {
        let done = Tombstone {
            completed_at: Some(now),
            ..tombstone.clone()
        };
        store.set(&walk.keys.purged(), &encode(&done)).await?;
    }
    let state = match next {
        Some(_) => State::Purging,
        None => State::Purged,
    };
    Ok(answer(state, deleted, next, None))
}

/// Whether campaign may be purged at `now`; if so, its tombstone as far as
/// the campaign decides it.
async fn due(
    store: &impl Store,
    keys: &CampaignKeys,
    campaign: &Campaign,
    dating: &Dating,
    now: Timestamp,
) -> Result<Tombstone> {
    let zone = campaign.zone()?;
    let claims_end = match super::campaigns::closed_at(store, keys).await? {
        Some(closed) => closed.min(campaign.claim_ends_at),
        None => campaign.claim_ends_at,
    };
    if now < claims_end {
        let until = render(claims_end, &zone);
        return Err(Error::PurgeNotDue(format!(
            "its claims are open until {until}"
        )));
    }
    // A claim in flight at a close writes its coupon within a lease.
    let (first, last) = campaign.claim_months(&zone, claims_end + LEASE);
    let mut expires = campaign.claim_starts_at;
    let mut month = first;
    while month <= last {
        expires = expires.max(dating.expiry.expiry_of_claim_month(month, &zone));
        month = month.next();
    }
    if now < expires {
        let until = render(expires, &zone);
        return Err(Error::PurgeNotDue(format!(
            "its coupons are valid until {until}"
        )));
    }
    let mut month = first;
    while month <= last {
        if !month_walked(store, keys, month, dating.revision).await? {
            return Err(Error::PurgeNotDue(format!(
                "the sweep has not recorded the coupons of claim month {month} as ended under the rule in force (POST /expirations)"
            )));
        }
        month = month.next();
    }
    let retention = Span::new().days(i64::from(campaign.retention_days));
    let kept_until = expires
        .to_zoned_datetime(zone.clone())
        .checked_add(retention)
        .map_err(|e| Error::Internal(format!("retention overflows: {e}")))?
        .timestamp();
    if now < kept_until {
        let until = render(kept_until, &zone);
        return Err(Error::PurgeNotDue(format!(
            "its retention runs until {until}"
        )));
    }
    Ok(Tombstone {
        campaign: campaign.clone(),
        dating: dating.clone(),
        first_month: first,
        last_month: last,
        claims_end: claims_end.as_second(),
        rated: false,
        deleted_at: now,
        completed_at: None,
        changed_by: None,
        reason: None,
    })
}

/// Whether `through` is a cursor at the end of campaign `id`'s events.
async fn exported(
    store: &impl Store,
    id: &CampaignId,
    through: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    let Some(through) = through else {
        return Err(Error::invalid(
            "exported_through",
            "must be the next_cursor of the last page of the campaign's events",
        ));
    };
    let page = events::page(store, id, Some(through), 1, now)
        .await
        .map_err(|e| match e {
            Error::InvalidRequest { .. } => Error::invalid(
                "exported_through",
                "is not an events cursor of this campaign",
            ),
            other => other,
        })?;
    match page.events.is_empty() && !page.has_more && page.waiting == 0 {
        true => Ok(()),
        false => Err(Error::ExportIncomplete),
    }
}

/// Lease `key`'s attempts and the registers that saw them.
fn lease_keys(key: &str) -> impl Iterator<Item = String> + '_ {
    (1..=ATTEMPTS).flat_map(move |n| {
        let attempt = attempt_key(key, n);
        let seen = seen_register(&attempt);
        [attempt, seen]
    })
}

/// One call's walk.
struct Walk<'a, S> {
    store: &'a S,
    keys: CampaignKeys,
    tombstone: &'a Tombstone,
    deleted: u64,
}

impl<S: Store> Walk<'_, S> {
    fn campaign(&self) -> &Campaign {
        &self.tombstone.campaign
    }

    fn spent(&self) -> bool {
        self.deleted >= KEYS_PER_CALL
    }

    async fn delete(&mut self, keys: Vec<String>) -> Result<()> {
        for chunk in keys.chunks(KEYS_PER_DELETE) {
            self.store.delete_many(chunk).await?;
            self.deleted += chunk.len() as u64;
        }
        Ok(())
    }

    /// Walks from `cursor` until done (`None`) or out of budget.
    async fn run(&mut self, mut cursor: Cursor) -> Result<Option<Cursor>> {
        loop {
            let next = match cursor {
                Cursor::Index { month, shard, slot } => self.index(month, shard, slot).await?,
                Cursor::Ledger { index, position } => self.ledger(index, position).await?,
                Cursor::Rate { hour } => self.rate(hour).await?,
                Cursor::Campaign { offset } => self.rest(offset).await?,
            };
            match next {
                Step::Stopped(at) => return Ok(Some(at)),
                Step::Next(at) => cursor = at,
                Step::Done => return Ok(None),
            }
        }
    }

    /// The expiry index from `slot` of `shard` of `month` on, with its coupons.
    async fn index(&mut self, mut month: YearMonth, mut shard: u32, mut slot: i64) -> Result<Step> {
        let shards = self.campaign().shard_count();
        while month <= self.tombstone.last_month {
            while shard < shards {
                let issued = read_counter(self.store, &self.keys.month_seq(month, shard)).await?;
                while slot <= issued {
                    if self.spent() {
                        return Ok(Step::Stopped(Cursor::Index { month, shard, slot }));
                    }
                    let n = SLOTS_PER_ROUND.min(issued - slot + 1);
                    let slots = (slot..slot + n)
                        .map(|n| self.keys.month_slot(month, shard, n))
                        .collect();
                    self.coupons(slots).await?;
                    slot += n;
                }
                shard += 1;
                slot = 1;
            }
            month = month.next();
            shard = 0;
        }
        Ok(Step::Next(Cursor::Ledger {
            index: 0,
            position: 1,
        }))
    }

    /// The coupons in `slots` with what derives from them, then the slots.
    async fn coupons(&mut self, slots: Vec<String>) -> Result<()> {
        let codes: Vec<CouponCode> = self
            .store
            .get_many(&slots)
            .await?
            .into_iter()
            .flatten()
            .filter_map(|bytes| CouponCode::parse(&String::from_utf8_lossy(&bytes)))
            .collect();
        let coupon_keys: Vec<CouponKeys> = codes.iter().map(CouponKeys::new).collect();
        let reads: Vec<String> = coupon_keys
            .iter()
            .flat_map(|k| [k.record(), k.generation()])
            .collect();
        let values = self.store.get_many(&reads).await?;
        // Generations in play: the counter, plus one per revival.
        let epochs = i64::from(self.tombstone.dating.epoch);
        let mut coupons = Vec::with_capacity(codes.len());
        for (keys, pair) in coupon_keys.iter().zip(values.chunks(2)) {
            let record = pair[0]
                .as_deref()
                .and_then(|bytes| serde_json::from_slice::<CouponRecord>(bytes).ok());
            let counted = pair[1].as_deref().and_then(decode_small_counter);
            coupons.push((keys, record, counted.unwrap_or(0) + epochs));
        }
        // The counters of what each generation and holder took.
        let mut reads = Vec::new();
        for (keys, record, generations) in &coupons {
            reads.extend((0..=*generations).map(|g| format!("{}:n", keys.turns(g))));
            if let Some(record) = record {
                reads.push(self.keys.positions(&record.user_id));
            }
        }
        let mut counts = self.store.get_many(&reads).await?.into_iter();
        let mut count = |at_most: i64| {
            let value = counts.next().flatten();
            value
                .as_deref()
                .map_or(Some(0), decode_small_counter)
                .unwrap_or(at_most)
                .min(at_most)
        };
        let limit = i64::from(self.campaign().per_user_limit);
        let (mut derived, mut leases) = (Vec::new(), Vec::new());
        for (keys, record, generations) in &coupons {
            derived.push(keys.generation());
            for g in 0..=*generations {
                leases.extend([keys.lock(g), keys.cancel(g)]);
                derived.extend([keys.end(g), keys.cancelled(g)]);
                let turns = keys.turns(g);
                let taken = count(super::holds::MAX_TURNS);
                derived.push(format!("{turns}:n"));
                for t in 1..=taken {
                    derived.extend([
                        format!("{turns}:{t}"),
                        seen_register(&format!("{turns}:{t}")),
                    ]);
                }
            }
            let Some(record) = record else { continue };
            let user = record.user_id.as_str();
            for q in 1..=count(limit) as u32 {
                derived.push(self.keys.user_slot(user, q));
                leases.push(self.keys.user_slot_owner(user, q));
            }
            derived.push(self.keys.positions(user));
            if let Some(n) = record.wallet_slot {
                derived.push(keys::wallet_slot(user, n));
            }
            if let Some(key) = &record.claim_key {
                let (owner, answer) = keys::idempotency(user, key);
                leases.push(owner);
                derived.push(answer);
            }
        }
        // A lease's later attempts follow its second: most leases have none.
        let seconds: Vec<String> = leases.iter().map(|l| attempt_key(l, 2)).collect();
        let seconds = self.store.get_many(&seconds).await?;
        for (lease, second) in leases.iter().zip(seconds) {
            match second {
                Some(_) => derived.extend(lease_keys(lease)),
                None => derived.extend(lease_keys(lease).take(2)),
            }
        }
        self.delete(derived).await?;
        self.delete(coupon_keys.iter().map(CouponKeys::record).collect())
            .await?;
        let seen = slots.iter().map(|slot| seen_register(slot));
        let mut index: Vec<String> = seen.collect();
        index.extend(slots);
        self.delete(index).await
    }

    fn ledgers(&self) -> Vec<Ledger> {
        let shards = 0..self.campaign().shard_count();
        let mut ledgers = Vec::new();
        for shard in shards {
            ledgers.extend([
                self.keys.redemptions(shard),
                self.keys.cancels(shard),
                self.keys.holds(shard),
                self.keys.releases(shard),
            ]);
        }
        ledgers.extend((0..=self.tombstone.dating.epoch).map(|e| self.keys.expirations(e)));
        ledgers
    }

    /// The ledgers from position `position` of the `index`-th on.
    async fn ledger(&mut self, mut index: usize, mut position: i64) -> Result<Step> {
        let ledgers = self.ledgers();
        while let Some(ledger) = ledgers.get(index) {
            let taken = brake::count(read_counter(self.store, ledger.counter()).await?);
            while position <= taken {
                if self.spent() {
                    return Ok(Step::Stopped(Cursor::Ledger { index, position }));
                }
                let n = POSITIONS_PER_ROUND.min(taken - position + 1);
                let entries = (position..position + n).flat_map(|p| {
                    let entry = ledger.entry_key(p);
                    let seen = seen_register(&entry);
                    [entry, seen]
                });
                self.delete(entries.collect()).await?;
                position += n;
            }
            let settled = format!("{}:settled", ledger.counter());
            self.delete(vec![settled, ledger.counter().to_owned()])
                .await?;
            index += 1;
            position = 1;
        }
        let hour = self
            .campaign()
            .claim_starts_at
            .as_second()
            .div_euclid(3_600);
        Ok(Step::Next(match self.tombstone.rated {
            true => Cursor::Rate { hour },
            false => Cursor::Campaign { offset: 0 },
        }))
    }

    /// The rate counters of the claim window's marked minutes of its marked
    /// hours from `hour` on: a round trip per thousand hours, one per marked
    /// hour, and the keys of the minutes marked.
    async fn rate(&mut self, mut hour: i64) -> Result<Step> {
        let counters = self.campaign().shard_count();
        let end = self.tombstone.claims_end.div_euclid(3_600);
        while hour <= end {
            let last = (hour + HOURS_PER_ROUND - 1).min(end);
            let marks: Vec<String> = (hour..=last).map(|h| self.keys.rate_hour(h)).collect();
            let found = self.store.get_many(&marks).await?;
            let marked = (hour..=last).zip(found).filter(|(_, mark)| mark.is_some());
            for (h, _) in marked {
                if self.spent() {
                    return Ok(Step::Stopped(Cursor::Rate { hour: h }));
                }
                let minutes = h * 60..h * 60 + 60;
                let marks: Vec<String> =
                    minutes.clone().map(|m| self.keys.rate_minute(m)).collect();
                let found = self.store.get_many(&marks).await?;
                let mut keys = Vec::new();
                for (m, mark) in minutes.zip(found) {
                    if mark.is_some() {
                        let seconds = m * 60..m * 60 + 60;
                        let rate = seconds.flat_map(|s| (0..counters).map(move |c| (s, c)));
                        keys.extend(rate.map(|(s, c)| self.keys.rate(s, c)));
                        keys.push(self.keys.rate_minute(m));
                    }
                }
                keys.push(self.keys.rate_hour(h));
                self.delete(keys).await?;
            }
            hour = last + 1;
        }
        Ok(Step::Next(Cursor::Campaign { offset: 0 }))
    }

    /// Every other key of the campaign from the `offset`-th on: the same
    /// list on every call, as the counters it is made from go last.
    async fn rest(&mut self, offset: usize) -> Result<Step> {
        let keys = self.rest_keys().await?;
        let mut at = offset;
        while at < keys.len() {
            if self.spent() {
                return Ok(Step::Stopped(Cursor::Campaign { offset: at }));
            }
            let end = (at + KEYS_PER_DELETE).min(keys.len());
            self.delete(keys[at..end].to_vec()).await?;
            at = end;
        }
        Ok(Step::Done)
    }

    async fn rest_keys(&self) -> Result<Vec<String>> {
        let keys = &self.keys;
        let store = self.store;
        // Read with `get`, not an increment of 0: that would recreate a
        // counter a call before deleted. All of them stay below 10^6.
        let counters = [
            keys.brake(),
            keys.closes(),
            keys.freeze(),
            keys.dating_seq(),
            keys.recount(),
        ];
        let mut read = get_array(store, counters.clone()).await?.into_iter();
        let mut next = || {
            let value = read.next().flatten();
            value.as_deref().and_then(decode_small_counter).unwrap_or(0)
        };
        let (brake, closes, freeze, redatings, recounts) = (next(), next(), next(), next(), next());
        let changes = store
            .get(&keys.limits_done())
            .await?
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok())
            .unwrap_or(0)
            .clamp(0, 1_000_000);
        let shards = 0..self.campaign().shard_count();
        let mut list = vec![
            keys.dating(),
            keys.created(),
            keys.sold_out(),
            keys.limits(),
        ];
        // The logs' records, with the registers where a reader waited for
        // one; a change of limits that died may have written the one past done.
        let records = (1..=redatings)
            .map(|n| keys.dating_change(n))
            .chain((1..=brake % brake::CLOSED).map(|n| keys.brake_record(n)))
            .chain((1..=closes).map(|k| keys.close_record(k)))
            .chain((1..=freeze).map(|n| keys.freeze_record(n)))
            .chain((1..=changes + 1).map(|n| keys.limits_change(n)));
        list.extend(records.flat_map(|record| [seen_register(&record), record]));
        list.extend(lease_keys(&keys.limits_lock()));
        for n in 2..=changes + 1 {
            let lock = attempt_key(&keys.limits_lock(), n);
            list.push(seen_register(&lock));
            list.push(lock);
        }
        // Brake levels move once per transition or close.
        let claim_levels = brake % brake::CLOSED + closes;
        for shard in shards.clone() {
            for level in 1..=claim_levels {
                list.extend(lease_keys(&keys.brake_step(shard, level)));
            }
            for level in 1..=freeze {
                list.extend(lease_keys(&keys.freeze_step(shard, level)));
            }
            list.extend([keys.claimed(shard), keys.withheld(shard)]);
        }
        for round in 1..=recounts + 1 {
            list.extend(lease_keys(&keys.recount_step(round)));
            list.extend([
                keys.recount_since(round),
                keys.recount_full(round),
                keys.recount_done(round),
            ]);
            for shard in shards.clone() {
                list.extend(lease_keys(&keys.recount_shard(round, shard)));
                list.push(keys.recount_progress(round, shard));
            }
        }
        let mut month = self.tombstone.first_month;
        while month <= self.tombstone.last_month {
            for revision in 0..=redatings {
                list.extend(swept_markers(keys, month, revision));
            }
            for shard in shards.clone() {
                list.extend([keys.month_count(month, shard), keys.month_seq(month, shard)]);
            }
            month = month.next();
        }
        // What this list is made from, last.
        list.push(keys.limits_done());
        list.extend(counters);
        Ok(list)
    }
}

/// Where a phase of the walk ended.
enum Step {
    /// Out of budget: the next call goes on here.
    Stopped(Cursor),
    /// The phase is done: the next begins here.
    Next(Cursor),
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserId;
    use crate::code::RANDOM_BYTES;
    use crate::expiry::ExpiryRule;
    use crate::ops::brake::Note;
    use crate::ops::campaigns::{self, close, create, set_frozen};
    use crate::ops::claim::{ClaimRequest, claim};
    use crate::ops::dating::{RedatingRequest, redate};
    use crate::ops::events::tests::{id, story};
    use crate::ops::expire::{ExpirationRequest, sweep};
    use crate::ops::limits::{LimitsRequest, change};
    use crate::ops::testing::{campaign, setup_time, ts};
    use crate::store::memory::{Call, MemoryStore};
    use futures::executor::block_on;
    use std::collections::BTreeMap;

    fn note() -> Note {
        Note {
            changed_by: Some("ops".into()),
            reason: Some("drill".into()),
        }
    }

    async fn claim_in(store: &MemoryStore, campaign: &str, user: &str, seed: u8, at: &str) {
        let request = ClaimRequest {
            campaign_id: CampaignId::parse(campaign).expect("an id"),
        };
        let code = CouponCode::from_random([seed; RANDOM_BYTES]);
        let key = format!("k{seed}");
        claim(store, &UserId(user.into()), &key, request, ts(at), code)
            .await
            .expect("a claim");
    }

    async fn sweep_at(store: &MemoryStore, at: &str) {
        for _ in 0..4 {
            sweep(store, ExpirationRequest::default(), ts(at), || false)
                .await
                .expect("a sweep");
        }
    }

    /// The events story, then everything else an operator can do to it:
    /// a rate ceiling, a claim under it, a freeze, a close, a re-dating that
    /// revives, the month-end sweep; and another campaign beside it.
    fn ended() -> MemoryStore {
        let (store, _) = story();
        block_on(async {
            create(&store, campaign("other"), setup_time())
                .await
                .expect("a campaign");
            claim_in(&store, "other", "dave", 40, "2028-02-06T12:00:00+08:00").await;
            let ceiling = LimitsRequest {
                max_claims_per_second: Some(Some(50)),
                changed_by: Some("ops".into()),
                ..Default::default()
            };
            change(&store, &id(), ceiling, ts("2028-02-07T00:00:00+08:00"))
                .await
                .expect("a limits change");
            claim_in(&store, "c", "carol", 41, "2028-02-07T10:00:00+08:00").await;
            claim_in(&store, "c", "carol", 42, "2028-02-07T10:00:01+08:00").await;
            let at = ts("2028-02-08T00:00:00+08:00");
            set_frozen(&store, &id(), true, note(), at)
                .await
                .expect("a freeze");
            set_frozen(&store, &id(), false, note(), at)
                .await
                .expect("an unfreeze");
            let at = ts("2028-02-10T00:00:00+08:00");
            close(&store, &id(), note(), at).await.expect("a close");
            let later = RedatingRequest {
                expiry: ExpiryRule::EndOfMonth {
                    month: crate::expiry::YearMonth::parse("2028-03").expect("a month"),
                },
                revive_expired: true,
                changed_by: "ops".into(),
                reason: None,
            };
            redate(&store, &id(), later, at).await.expect("a re-dating");
            sweep_at(&store, "2028-04-01T00:10:00+08:00").await;
            // Alice's first claim's key as if two retries had each taken it
            // over from an owner that died.
            let (owner, _) = crate::keys::idempotency("alice", "k1");
            for n in [2, 3] {
                let attempt = attempt_key(&owner, n);
                store.increment(&attempt, 1).await.expect("an attempt");
                store
                    .set(&seen_register(&attempt), b"1")
                    .await
                    .expect("seen");
            }
        });
        store
    }

    /// After its retention (90 days from the end of March).
    const DUE: &str = "2028-07-15T00:00:00+08:00";

    fn export(store: &MemoryStore, now: Timestamp) -> String {
        let mut cursor = None::<String>;
        loop {
            let page = block_on(events::page(store, &id(), cursor.as_deref(), 1_000, now))
                .expect("a page");
            cursor = Some(page.next_cursor);
            if !page.has_more {
                return cursor.unwrap_or_default();
            }
        }
    }

    fn request(exported: &str, cursor: Option<String>) -> PurgeRequest {
        PurgeRequest {
            exported_through: Some(exported.to_owned()),
            cursor,
            changed_by: Some("finance".into()),
            reason: Some("retention over".into()),
        }
    }

    /// Purges campaign `c` from `now` on as an operator would: seals, waits,
    /// walks with the cursors; `retry` says whether a failed call is retried.
    fn purge_all(store: &MemoryStore, now: Timestamp) -> Result<Vec<Purge>> {
        let exported = export(store, now);
        let mut answers = Vec::new();
        let (mut now, mut cursor) = (now, None::<String>);
        for _ in 0..10_000 {
            let answer =
                match block_on(purge(store, &id(), request(&exported, cursor.clone()), now)) {
                    Ok(answer) => answer,
                    // A failed call changed nothing it cannot do again.
                    Err(Error::StoreUnavailable(_)) => continue,
                    Err(e) => return Err(e),
                };
            answers.push(answer.clone());
            match answer.state {
                State::Sealing => {
                    let wait = answer.retry_after_seconds.expect("a wait");
                    now += jiff::SignedDuration::from_secs(i64::from(wait));
                }
                State::Purging => cursor = answer.next_cursor,
                State::Purged => return Ok(answers),
            }
        }
        panic!("the purge never ended");
    }

    /// Keys of campaign `c` and its coupons and users that a purge leaves:
    /// only what the module's documentation says stays.
    fn left_over(store: &MemoryStore, other: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
        let kept = ["c:c:owner", "c:c:purge", "c:c:purge:since", "c:c:purged"];
        let values = store.values.borrow();
        values
            .iter()
            .filter(|(key, value)| {
                let stays = key.starts_with("campaigns:")
                    || kept.contains(&key.as_str())
                    || (key.starts_with("u:") && key.ends_with(":coupons:n"))
                    || (key.starts_with("u:") && key.contains(":order:"));
                // The other campaign's keys stay as they were.
                !stays && other.get(*key) != Some(*value)
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The other campaign's keys: its own, its coupon's, its user's.
    fn others(store: &MemoryStore) -> BTreeMap<String, Vec<u8>> {
        let other_code = CouponCode::from_random([40; RANDOM_BYTES]).to_string();
        let values = store.values.borrow();
        values
            .iter()
            .filter(|(key, _)| {
                key.starts_with("c:other")
                    || key.starts_with(&format!("k:{other_code}"))
                    || key.starts_with("u:dave:")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn a_purge_deletes_every_key_of_the_campaign_but_its_tombstone() {
        let store = ended();
        let before = store.values.borrow().len();
        let other = others(&store);
        assert!(other.len() > 10, "{other:?}");
        let answers = purge_all(&store, ts(DUE)).expect("a purge");
        let states: Vec<State> = answers.iter().map(|a| a.state).collect();
        assert_eq!(states[..2], [State::Sealing, State::Sealing]);
        assert_eq!(states.last(), Some(&State::Purged));
        assert_eq!(left_over(&store, &other), Vec::<String>::new());
        let after = store.values.borrow().len();
        assert!(after < before / 2, "{before} keys before, {after} after");
        // The campaign and its coupons are gone to every reader.
        let now = ts(DUE);
        assert_eq!(
            block_on(campaigns::get(&store, &id())).err(),
            Some(Error::CampaignNotFound)
        );
        let listed = block_on(campaigns::list(&store, 0, 100)).expect("a list");
        let ids: Vec<&serde_json::Value> =
            listed.campaigns.iter().map(|c| &c.campaign["id"]).collect();
        assert_eq!(ids, ["other"]);
        let code = CouponCode::from_random([2; RANDOM_BYTES]).to_string();
        let coupon = block_on(crate::ops::coupons::get(&store, None, &code, now));
        assert_eq!(coupon.err(), Some(Error::CouponNotFound));
        // Called again, it is done; and no re-dating can revive it.
        let again = block_on(purge(&store, &id(), PurgeRequest::default(), now)).expect("a call");
        assert_eq!((again.state, again.deleted), (State::Purged, 0));
    }

    #[test]
    fn a_purge_that_fails_midway_goes_on_from_its_cursor() {
        let store = ended();
        let other = others(&store);
        let deletes = std::cell::Cell::new(0);
        *store.hook.borrow_mut() = Some(Box::new(move |_, call| {
            if let Call::Delete { keys } = call
                && !keys.is_empty()
            {
                deletes.set(deletes.get() + 1);
                // Some deletes apply, then report failure.
                if [2, 5, 9, 14, 20].contains(&deletes.get()) {
                    return Err(crate::store::StoreError("timed out".into()));
                }
            }
            Ok(())
        }));
        purge_all(&store, ts(DUE)).expect("a purge");
        *store.hook.borrow_mut() = None;
        assert_eq!(left_over(&store, &other), Vec::<String>::new());
    }

    #[test]
    fn a_purge_waits_for_the_end_the_sweep_the_retention_and_the_export() {
        let store = ended();
        let early = |at: &str| {
            let exported = export(&store, ts(at));
            block_on(purge(&store, &id(), request(&exported, None), ts(at)))
        };
        let not_due = |result: Result<Purge>| match result {
            Err(Error::PurgeNotDue(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(not_due(early("2028-03-15T00:00:00+08:00")).contains("valid until"));
        assert!(not_due(early("2028-06-29T00:00:00+08:00")).contains("retention runs until"));
        // Without the export read to its end.
        let now = ts(DUE);
        let none = block_on(purge(&store, &id(), PurgeRequest::default(), now));
        assert_eq!(none.unwrap_err().field(), Some("exported_through"));
        let start = export(&store, ts("2028-01-01T00:00:00+08:00"));
        let c_id = id();
        let first = block_on(events::page(&store, &c_id, None, 1, now));
        let first = first.expect("a page").next_cursor;
        assert_ne!(first, start);
        let partial = block_on(purge(&store, &id(), request(&first, None), now));
        assert_eq!(partial.unwrap_err(), Error::ExportIncomplete);
        // A campaign whose month the sweep has not walked.
        let unswept = MemoryStore::default();
        block_on(create(&unswept, campaign("c"), setup_time())).expect("a campaign");
        block_on(claim_in(
            &unswept,
            "c",
            "erin",
            50,
            "2028-02-01T10:00:00+08:00",
        ));
        let exported = export(&unswept, now);
        let result = block_on(purge(&unswept, &id(), request(&exported, None), now));
        assert!(not_due(result).contains("has not recorded"));
        let open = MemoryStore::default();
        let mut c = campaign("c");
        c.claim_ends_at = ts("2029-01-01T00:00:00+08:00");
        c.expiry = ExpiryRule::EndOfClaimMonth;
        block_on(create(&open, c, setup_time())).expect("a campaign");
        let exported = export(&open, now);
        let result = block_on(purge(&open, &id(), request(&exported, None), now));
        assert!(not_due(result).contains("claims are open"));
        // Nothing was sealed by a refusal.
        assert_eq!(store.values.borrow().get("c:c:purge"), None);
    }

    #[test]
    fn a_sealed_campaign_cannot_be_redated() {
        let store = ended();
        let now = ts(DUE);
        let exported = export(&store, now);
        let first = block_on(purge(&store, &id(), request(&exported, None), now)).expect("a seal");
        assert_eq!(first.state, State::Sealing);
        let later = RedatingRequest {
            expiry: ExpiryRule::At {
                at: ts("2029-01-01T00:00:00+08:00"),
            },
            revive_expired: true,
            changed_by: "ops".into(),
            reason: None,
        };
        let redated = block_on(redate(&store, &id(), later, now));
        assert_eq!(redated.unwrap_err(), Error::CampaignPurged);
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        for cursor in [
            Cursor::Index {
                month: YearMonth::parse("2028-02").expect("a month"),
                shard: 3,
                slot: 17,
            },
            Cursor::Ledger {
                index: 2,
                position: 9,
            },
            Cursor::Rate { hour: 500_000 },
            Cursor::Campaign { offset: 4_096 },
        ] {
            assert_eq!(Cursor::parse(&cursor.render()), Some(cursor));
        }
        for junk in ["", "x", "i.2028-02.3", "l.1.2.3", "r.", "c.-1"] {
            assert_eq!(Cursor::parse(junk), None, "{junk}");
        }
        let store = ended();
        let junk = PurgeRequest {
            cursor: Some("z".into()),
            ..request("", None)
        };
        let result = block_on(purge(&store, &id(), junk, ts(DUE)));
        assert_eq!(result.unwrap_err().field(), Some("cursor"));
    }
}
