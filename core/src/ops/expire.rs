//! The expiry sweep: records `expired` for issued coupons past their expiry.
//!
//! Expiry itself needs no sweep (a coupon past its expiry is refused either
//! way); the sweep makes it part of the stored state and of `stats.expired`.
//! It walks the expiry index, never the whole store: per campaign, per claim
//! month (every coupon of a claim month expires at one instant, whatever the
//! rule), per stock shard. Months not yet due are skipped without reading
//! them, and a month walked to the end after it was over is marked swept for
//! the expiry rule in force, so later calls skip it too. Each call stops after
//! `limit` coupons or when its time is up, and returns a cursor to resume
//! from. It takes each coupon's generation lock exactly as a redemption
//! would, so the two can never both succeed.

use super::campaigns::load_slot;
use super::dating::{self, Dating};
use super::ledger::{self, Actor, Settle, Stamp};
use super::recount::{self, Recount};
use super::redeem::confirm_cancel;
use super::{encode, load_ending};
use crate::campaign::Campaign;
use crate::code::CouponCode;
use crate::coupon::Ending;
use crate::error::{Error, Result};
use crate::expiry::YearMonth;
use crate::keys::{self, CampaignKeys, CouponKeys};
use crate::lease::{self, Ownership};
use crate::store::{Store, read_counter};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

pub const DEFAULT_LIMIT: u32 = 1_000;
pub const MAX_LIMIT: u32 = 10_000;

/// Index slots one batch of the walk reads at once: two reads for the batch,
/// a lock per coupon, and one ledger write for all it expires.
const BATCH: u32 = 256;

/// Campaigns and claim months one call looks at, at most.
pub const MAX_VISITS: u32 = 1_000;

/// How long after a month ends its claims may still be writing their index
/// slots: a month is marked swept only after this.
const SETTLE: SignedDuration = SignedDuration::from_mins(5);

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpirationRequest {
    #[serde(default, with = "optional_timestamp")]
    pub as_of: Option<Timestamp>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// `"i/n"`: walk only the stock shards `s` with `s % n == i`, so that `n`
    /// sweepers walk a month's coupons side by side (see [`Partition`]).
    pub partition: Option<String>,
}

/// The most sweepers that can walk side by side.
pub const MAX_PARTITIONS: u32 = 64;

/// A share of every month's stock shards: those `s` with `s % of == index`.
///
/// A coupon's lock is an increment, which a component makes one at a time
/// (`wasi:keyvalue`'s increment is synchronous), so one walker takes one lock
/// per store round trip; `of` walkers, each in its own request, take `of` at
/// once. Partition 0 also does each campaign's own work (the recount, the
/// ledgers). Each partition marks a month swept for itself; a month the whole
/// walk marked is skipped by every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Partition {
    index: u32,
    of: u32,
}

impl Partition {
    const WHOLE: Partition = Partition { index: 0, of: 1 };

    /// `"i/n"` with `0 ≤ i < n ≤ MAX_PARTITIONS`.
    fn parse(s: &str) -> Option<Partition> {
        let (index, of) = s.split_once('/')?;
        let partition = Partition {
            index: index.parse().ok()?,
            of: of.parse().ok()?,
        };
        (partition.index < partition.of && partition.of <= MAX_PARTITIONS).then_some(partition)
    }

    /// The first shard of this partition from `shard` on.
    fn from(self, shard: u32) -> u32 {
        shard.saturating_add((self.index + self.of - shard % self.of) % self.of)
    }

    /// The counter that marks `month` swept by this partition under `revision`.
    fn swept(self, keys: &CampaignKeys, month: YearMonth, revision: i64) -> String {
        let whole = keys.month_swept(month, revision);
        match self == Partition::WHOLE {
            true => whole,
            false => format!("{whole}:{}of{}", self.index, self.of),
        }
    }
}

/// Every counter that can mark `month` walked under `revision`: the whole
/// walk's first, then each partition of each partitioning, in order.
pub(crate) fn swept_markers(keys: &CampaignKeys, month: YearMonth, revision: i64) -> Vec<String> {
    let mut markers = vec![keys.month_swept(month, revision)];
    for of in 2..=MAX_PARTITIONS {
        markers.extend((0..of).map(|index| Partition { index, of }.swept(keys, month, revision)));
    }
    markers
}

/// Whether `month`'s coupons were walked to the end under `revision`: by a
/// whole walk, or by every partition of one partitioning (one round trip).
pub(crate) async fn month_walked(
    store: &impl Store,
    keys: &CampaignKeys,
    month: YearMonth,
    revision: i64,
) -> Result<bool> {
    let found = store
        .get_many(&swept_markers(keys, month, revision))
        .await?;
    if found.first().is_some_and(Option::is_some) {
        return Ok(true);
    }
    let mut at = 1;
    for of in 2..=MAX_PARTITIONS as usize {
        if found
            .get(at..at + of)
            .is_some_and(|p| p.iter().all(Option::is_some))
        {
            return Ok(true);
        }
        at += of;
    }
    Ok(false)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Swept {
    /// Index slots this call looked at.
    pub examined: u64,
    /// Coupons this call moved to `expired`.
    pub expired: u64,
    /// Stock units a recount gave back in this call: taken by claims that
    /// died before writing their coupon (see `recount`).
    pub returned: u64,
    /// Ledger positions this call settled: counted redemptions, cancels and
    /// expiries, or left empty by a writer that died (see `ledger`).
    pub settled: u64,
    /// Where the next call continues; `null` when the walk is complete.
    pub next_cursor: Option<String>,
}

/// A position in the walk: campaign index slot (from 1), claim month (the
/// campaign's first when `None`), stock shard (from 0), coupon slot (from
/// 1), and whether an earlier call of this month's walk left a coupon to a
/// redemption in flight (so the month is not marked swept at its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    campaign: i64,
    month: Option<YearMonth>,
    shard: u32,
    coupon: i64,
    unfinished: bool,
}

impl Cursor {
    fn campaign(campaign: i64) -> Cursor {
        Cursor {
            campaign,
            month: None,
            shard: 0,
            coupon: 1,
            unfinished: false,
        }
    }

    /// `campaign.month.shard.coupon`, e.g. `3.2028-02.5.17`, with `.u` if
    /// unfinished, or `campaign` at a campaign's start.
    fn parse(s: &str) -> Option<Cursor> {
        if let Ok(campaign) = s.parse::<i64>() {
            return (campaign >= 1).then(|| Cursor::campaign(campaign));
        }
        let mut parts = s.split('.');
        let cursor = Cursor {
            campaign: parts.next()?.parse().ok()?,
            month: Some(YearMonth::parse(parts.next()?)?),
            shard: parts.next()?.parse().ok()?,
            coupon: parts.next()?.parse().ok()?,
            unfinished: false,
        };
        let unfinished = match parts.next() {
            None => false,
            Some("u") => true,
            Some(_) => return None,
        };
        let cursor = Cursor {
            unfinished,
            ..cursor
        };
        (parts.next().is_none() && cursor.campaign >= 1 && cursor.coupon >= 1).then_some(cursor)
    }

    fn render_campaign(self) -> String {
        self.campaign.to_string()
    }

    fn render(self, month: YearMonth) -> String {
        let unfinished = if self.unfinished { ".u" } else { "" };
        format!(
            "{}.{month}.{}.{}{unfinished}",
            self.campaign, self.shard, self.coupon
        )
    }
}

/// One bounded step of the sweep. `out_of_time` is asked before each coupon
/// after the first: once it says yes, the call returns a cursor.
pub async fn sweep(
    store: &impl Store,
    request: ExpirationRequest,
    now: Timestamp,
    out_of_time: impl Fn() -> bool,
) -> Result<Swept> {
    let as_of = request.as_of.unwrap_or(now);
    if as_of > now {
        return Err(Error::invalid(
            "as_of",
            "must not be in the future: it would expire valid coupons",
        ));
    }
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::invalid("limit", format!("must be 1 to {MAX_LIMIT}")));
    }
    let partition = match &request.partition {
        Some(s) => Partition::parse(s).ok_or_else(|| {
            Error::invalid(
                "partition",
                format!("must be \"i/n\" with 0 <= i < n <= {MAX_PARTITIONS}"),
            )
        })?,
        None => Partition::WHOLE,
    };
    let mut cursor = match &request.cursor {
        Some(s) => Cursor::parse(s)
            .ok_or_else(|| Error::invalid("cursor", "is not a cursor this service gave"))?,
        None => Cursor::campaign(1),
    };
    let mut walk = Walk {
        store,
        now,
        as_of,
        limit,
        partition,
        out_of_time,
        examined: 0,
        visited: 0,
        expired: 0,
        returned: 0,
        settled: 0,
        unfinished: std::cell::Cell::new(false),
    };
    let campaigns = read_counter(store, keys::CAMPAIGN_SEQ).await?;
    while cursor.campaign <= campaigns {
        // Campaigns and months cost work too: thousands of them must not
        // run one call past the host's request limit.
        if walk.spent_visiting() {
            return Ok(walk.stopped(Some(cursor.render_campaign())));
        }
        walk.visited += 1;
        let Some((campaign, dating)) = load_slot(store, cursor.campaign).await? else {
            cursor = Cursor::campaign(cursor.campaign + 1);
            continue;
        };
        // At the campaign's start, not when resuming inside its months.
        if cursor.month.is_none()
            && partition.index == 0
            && (walk.recount(&campaign).await? == Recount::Stopped
                || walk.settle(&campaign, &dating).await? == Settle::Stopped)
        {
            return Ok(walk.stopped(Some(cursor.render_campaign())));
        }
        if let Some(stopped) = walk.campaign(&campaign, &dating, cursor).await? {
            return Ok(walk.stopped(Some(stopped)));
        }
        cursor = Cursor::campaign(cursor.campaign + 1);
    }
    Ok(walk.stopped(None))
}

/// One call's walk, and what it has done so far.
struct Walk<'s, S, F> {
    store: &'s S,
    now: Timestamp,
    as_of: Timestamp,
    limit: u32,
    partition: Partition,
    out_of_time: F,
    examined: u32,
    /// Campaigns and claim months looked at: work that is not a coupon.
    visited: u32,
    expired: u64,
    returned: u64,
    /// Ledger positions settled: work that is not an index slot.
    settled: u32,
    /// A coupon of the month being walked was left to a redemption in flight.
    unfinished: std::cell::Cell<bool>,
}

impl<S: Store, F: Fn() -> bool> Walk<'_, S, F> {
    /// Whether this call has done its share of coupons: `limit` index slots,
    /// or its time is up.
    fn spent(&self) -> bool {
        let work = self.examined + self.settled;
        work >= self.limit || (work > 0 && (self.out_of_time)())
    }

    /// This call's answer, resuming at `next_cursor`.
    fn stopped(&self, next_cursor: Option<String>) -> Swept {
        Swept {
            examined: self.examined.into(),
            expired: self.expired,
            returned: self.returned,
            settled: self.settled.into(),
            next_cursor,
        }
    }

    /// Moves the campaign's stock recount on; its slot reads count as examined.
    async fn recount(&mut self, campaign: &Campaign) -> Result<Recount> {
        let (store, now) = (self.store, self.now);
        let mut spend = |slots| self.charge(Work::Slots(slots));
        let recount = recount::step(store, campaign, now, &mut spend).await?;
        if let Recount::Returned(units) = recount {
            self.returned += units;
        }
        Ok(recount)
    }

    /// Whether this call has done its share of campaigns and months: each
    /// costs a round trip, so thousands of them (or a claim window starting
    /// in year 1000) stop at [`MAX_VISITS`], or when time is up.
    /// Grants as much of `work` as this call's share has room for (none
    /// once it is done; while it is not, at least one, so work that resumes
    /// moves on) and charges it: a look at a campaign, month or ledger (0)
    /// is one visit.
    fn charge(&mut self, work: Work) -> u32 {
        if self.spent_visiting() {
            return 0;
        }
        let room = self.room().max(1);
        match work {
            Work::Slots(0) | Work::Entries(0) => {
                self.visited += 1;
                1
            }
            Work::Slots(n) => {
                self.examined += n.min(room);
                n.min(room)
            }
            Work::Entries(n) => {
                self.settled += n.min(room);
                n.min(room)
            }
        }
    }

    /// Slots and entries this call may still read.
    fn room(&self) -> u32 {
        self.limit.saturating_sub(self.examined + self.settled)
    }

    fn spent_visiting(&self) -> bool {
        self.spent()
            || self.visited >= MAX_VISITS
            || (self.visited > 0 && self.visited.is_multiple_of(16) && (self.out_of_time)())
    }

    /// Walks one campaign's due months from `from`; `Some(cursor)` if it had
    /// to stop there.
    async fn campaign(
        &mut self,
        campaign: &Campaign,
        dating: &Dating,
        from: Cursor,
    ) -> Result<Option<String>> {
        let zone = campaign.zone()?;
        let keys = CampaignKeys::new(&campaign.id);
        let (first, last) = campaign.claim_months(&zone, self.now);
        let mut cursor = from;
        let mut month = from.month.unwrap_or(first).max(first);
        while month <= last {
            if month != from.month.unwrap_or(first) && self.spent_visiting() {
                return Ok(Some(
                    Cursor {
                        month: Some(month),
                        shard: 0,
                        coupon: 1,
                        unfinished: false,
                        ..from
                    }
                    .render(month),
                ));
            }
            self.visited += 1;
            let expires_at = dating.expiry.expiry_of_claim_month(month, &zone);
            let swept = self.partition.swept(&keys, month, dating.revision);
            let whole = keys.month_swept(month, dating.revision);
            if expires_at <= self.as_of
                && read_counter(self.store, &swept).await? == 0
                && (swept == whole || read_counter(self.store, &whole).await? == 0)
            {
                // Resuming this month's walk: what its earlier calls left.
                self.unfinished
                    .set(from.month == Some(month) && from.unfinished);
                cursor.shard = self.partition.from(cursor.shard);
                while cursor.shard < campaign.shard_count() {
                    let issued =
                        read_counter(self.store, &keys.month_seq(month, cursor.shard)).await?;
                    while cursor.coupon <= issued {
                        if self.spent() {
                            let unfinished = self.unfinished.get();
                            return Ok(Some(
                                Cursor {
                                    unfinished,
                                    ..cursor
                                }
                                .render(month),
                            ));
                        }
                        let left = u32::try_from(issued - cursor.coupon + 1).unwrap_or(BATCH);
                        let n = BATCH.min(left).min(self.room().max(1));
                        self.examined += n;
                        let slots: Vec<String> = (cursor.coupon..cursor.coupon + i64::from(n))
                            .map(|coupon| keys.month_slot(month, cursor.shard, coupon))
                            .collect();
                        match self
                            .expire_batch(campaign, &keys, dating, &slots, expires_at)
                            .await?
                        {
                            Some(expired) => self.expired += expired,
                            // Re-dated while walking: the next call walks
                            // this campaign again under the rule in force.
                            None => {
                                return Ok(Some(Cursor::campaign(from.campaign).render_campaign()));
                            }
                        }
                        cursor.coupon += i64::from(n);
                    }
                    cursor.shard = cursor.shard.saturating_add(self.partition.of);
                    cursor.coupon = 1;
                }
                // Walked to the end: once the month is over (and its last
                // claims have written their slots), it needs no other walk
                // under this rule.
                if !self.unfinished.get()
                    && month
                        .end(&zone)
                        .checked_add(SETTLE)
                        .is_ok_and(|settled| self.now >= settled)
                {
                    self.store.increment(&swept, 1).await?;
                }
            }
            month = month.next();
            cursor.shard = 0;
            cursor.coupon = 1;
        }
        Ok(None)
    }

    /// Expires the coupons in `slots` as [`expire_one`](Self::expire_one)
    /// does each, in few round trips: the slots, then every coupon's first
    /// generation and ending with the rule in force, then the lock of each
    /// never ended (one at a time: a component's increment is synchronous),
    /// then one ledger write for all it expired.
    /// A coupon past its first generation (cancelled, or revived) goes the
    /// one-at-a-time way. How many it expired; `None`: re-dated meanwhile.
    async fn expire_batch(
        &self,
        campaign: &Campaign,
        campaign_keys: &CampaignKeys,
        dating: &Dating,
        slots: &[String],
        expires_at: Timestamp,
    ) -> Result<Option<u64>> {
        let mut codes = Vec::with_capacity(slots.len());
        for (slot, code) in slots.iter().zip(self.store.get_many(slots).await?) {
            // A slot without a code is a claim that died before writing.
            if let Some(code) = code {
                let code = CouponCode::parse(&String::from_utf8_lossy(&code))
                    .ok_or_else(|| Error::Internal(format!("{slot} holds no coupon code")))?;
                codes.push((CouponKeys::new(&code), code));
            }
        }
        let mut reads = vec![campaign_keys.dating()];
        for (keys, _) in &codes {
            reads.extend([keys.generation(), keys.end(0)]);
        }
        let mut values = self.store.get_many(&reads).await?.into_iter();
        let register = values.next().flatten();
        if dating::parse(&campaign_keys.dating(), register.as_deref(), campaign)?.revision
            != dating.revision
        {
            return Ok(None);
        }
        let mut expired = 0;
        let mut fresh = Vec::new();
        for (keys, code) in codes {
            let (generation, end) = (values.next().flatten(), values.next().flatten());
            if generation.is_none() && end.is_none() {
                fresh.push((keys, code));
                continue;
            }
            match self
                .expire_one(campaign, campaign_keys, dating, &code, expires_at)
                .await?
            {
                Expired::Now => expired += 1,
                Expired::Not => {}
                Expired::RuleChanged => return Ok(None),
            }
        }
        let record = encode(&Ending::Expired {
            at: expires_at,
            swept_at: Some(self.now),
            revision: Some(dating.revision),
        });
        let mut ending = Vec::new();
        for (keys, code) in &fresh {
            let ours = match lease::own(self.store, &keys.lock(0), 1, self.now).await? {
                Ownership::Owned(1) => true,
                // A lapsed owner may have written its ending.
                Ownership::Owned(_) => self.store.get(&keys.end(0)).await?.is_none(),
                Ownership::Busy | Ownership::Lapsed => {
                    self.unfinished.set(true);
                    false
                }
            };
            if ours {
                ending.push(((keys.end(0), record.clone()), code.to_string(), 0));
            }
        }
        let count = ending.len() as u64;
        campaign_keys
            .expirations(dating.epoch)
            .record_many(self.store, ending, &self.stamp())
            .await?;
        Ok(Some(expired + count))
    }

    /// Expires coupon `code` unless its generation has ended or is being
    /// ended.
    async fn expire_one(
        &self,
        campaign: &Campaign,
        campaign_keys: &CampaignKeys,
        dating: &Dating,
        code: &CouponCode,
        expires_at: Timestamp,
    ) -> Result<Expired> {
        let keys = CouponKeys::new(code);
        let Some((generation, ending)) =
            load_ending(self.store, &keys, campaign_keys, campaign, dating).await?
        else {
            return Ok(Expired::RuleChanged);
        };
        if ending.is_some() {
            return Ok(Expired::Not);
        }
        match lease::own(self.store, &keys.lock(generation), 1, self.now).await? {
            Ownership::Owned(1) => {}
            // A lapsed owner may have written its ending.
            Ownership::Owned(_) if self.store.get(&keys.end(generation)).await?.is_none() => {}
            Ownership::Owned(_) => return Ok(Expired::Not),
            // A redemption (or another sweep) may still end it: walk the
            // month again later.
            Ownership::Busy | Ownership::Lapsed => {
                self.unfinished.set(true);
                return Ok(Expired::Not);
            }
        }
        let ending = Ending::Expired {
            at: expires_at,
            swept_at: Some(self.now),
            revision: Some(dating.revision),
        };
        campaign_keys
            .expirations(dating.epoch)
            .record(
                self.store,
                (keys.end(generation), encode(&ending)),
                code,
                generation,
                &self.stamp(),
            )
            .await?;
        Ok(Expired::Now)
    }
}

impl<S: Store, F: Fn() -> bool> Walk<'_, S, F> {
    /// What the sweep's ledger entries say besides their coupon.
    fn stamp(&self) -> Stamp {
        Stamp {
            amount: 0,
            at: self.now,
            by: Actor::Sweep,
            order: None,
        }
    }

    /// Settles the campaign's ledgers (see `ledger`), finishing cancels whose
    /// canceller died; their reads count as examined.
    async fn settle(&mut self, campaign: &Campaign, dating: &Dating) -> Result<Settle> {
        let (store, now) = (self.store, self.now);
        let mut spend = |entries| self.charge(Work::Entries(entries));
        let keys = CampaignKeys::new(&campaign.id);
        let counted = &mut async |_: &[u8]| Ok(true);
        let cancelled = &mut async |entry: &[u8]| confirm_cancel(store, entry, now).await;
        let expirations = keys.expirations(dating.epoch);
        if ledger::settle(store, &expirations, now, &mut spend, counted).await? == Settle::Stopped {
            return Ok(Settle::Stopped);
        }
        for shard in 0..campaign.shard_count() {
            let redemptions = keys.redemptions(shard);
            let cancels = keys.cancels(shard);
            if ledger::settle(store, &redemptions, now, &mut spend, counted).await?
                == Settle::Stopped
                || ledger::settle(store, &cancels, now, &mut spend, cancelled).await?
                    == Settle::Stopped
            {
                return Ok(Settle::Stopped);
            }
        }
        Ok(Settle::Done)
    }
}

/// Work a call charges to its share: index slots or ledger entries read
/// (none: a campaign, month or ledger looked at).
enum Work {
    Slots(u32),
    Entries(u32),
}

/// What the sweep did with one coupon.
enum Expired {
    Now,
    Not,
    /// The campaign was re-dated since this call loaded its rule.
    RuleChanged,
}

mod optional_timestamp {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => crate::time::parse(&s).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!("{s:?} is not an RFC 3339 timestamp with offset"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserId;
    use crate::campaign::CampaignId;
    use crate::ops::campaigns::{create, get};
    use crate::ops::claim::{ClaimRequest, claim};
    use crate::ops::testing::{campaign, ts};
    use crate::store::memory::{Call, MemoryStore};
    use futures::executor::block_on;

    /// Campaign "c" with `n` coupons claimed on 2028-02-10 by distinct users.
    fn store_with_coupons(n: u32) -> MemoryStore {
        let store = MemoryStore::default();
        let mut c = campaign("c");
        c.stock = 100;
        block_on(create(&store, c, crate::ops::testing::setup_time())).expect("campaign");
        claim_many(&store, 0..n, "2028-02-10T10:00:00+08:00");
        store
    }

    /// Users `u{i}` for each i in `users` claim a coupon of "c" at `at`.
    fn claim_many(store: &MemoryStore, users: std::ops::Range<u32>, at: &str) -> Vec<String> {
        block_on(async {
            let mut codes = Vec::new();
            for i in users {
                let mut bytes = [0u8; crate::code::RANDOM_BYTES];
                bytes[..4].copy_from_slice(&i.to_be_bytes());
                bytes[4..12].copy_from_slice(&ts(at).as_second().to_be_bytes());
                let request = ClaimRequest {
                    campaign_id: CampaignId::parse("c").expect("id"),
                };
                let user = UserId(format!("u{i}"));
                let claimed = claim(
                    store,
                    &user,
                    at,
                    request,
                    ts(at),
                    CouponCode::from_random(bytes),
                )
                .await
                .expect("claim");
                codes.push(claimed.coupon.code);
            }
            codes
        })
    }

    fn stats(store: &MemoryStore) -> crate::ops::campaigns::Stats {
        block_on(get(store, &CampaignId::parse("c").expect("id")))
            .expect("stats")
            .stats
    }

    /// Sweeps from the start until the walk is complete; (expired, examined, calls).
    fn sweep_all(store: &MemoryStore, now: &str, limit: u32) -> (u64, u64, u32) {
        let (mut expired, mut examined, mut calls) = (0, 0, 0);
        let mut cursor = None;
        loop {
            let swept = block_on(sweep(
                store,
                request(None, Some(limit), cursor),
                ts(now),
                || false,
            ))
            .expect("sweep");
            expired += swept.expired;
            examined += swept.examined;
            calls += 1;
            cursor = swept.next_cursor;
            if cursor.is_none() {
                return (expired, examined, calls);
            }
        }
    }

    #[test]
    fn only_due_claim_months_are_walked_and_a_finished_month_is_not_walked_again() {
        let store = MemoryStore::default();
        let mut c = campaign("c");
        c.stock = 100;
        c.per_user_limit = 5;
        c.claim_ends_at = ts("2028-04-01T00:00:00+08:00");
        block_on(create(&store, c, crate::ops::testing::setup_time())).expect("campaign");
        claim_many(&store, 0..4, "2028-02-10T10:00:00+08:00");
        claim_many(&store, 0..3, "2028-03-10T10:00:00+08:00");
        // In March, only February's coupons are due: March's are not read.
        assert_eq!(
            sweep_all(&store, "2028-03-02T00:00:00+08:00", 1_000),
            (4, 4, 1)
        );
        // February is over and walked: it is skipped from now on.
        assert_eq!(
            sweep_all(&store, "2028-03-20T00:00:00+08:00", 1_000),
            (0, 0, 1)
        );
        // A month walked before its claims could have settled is walked again.
        assert_eq!(
            sweep_all(&store, "2028-04-01T00:01:00+08:00", 1_000),
            (3, 3, 1)
        );
        // The window has closed too: the stock recount (its fence up since
        // 00:01) counts all 7 coupons' slots.
        assert_eq!(
            sweep_all(&store, "2028-04-01T00:06:00+08:00", 1_000),
            (0, 3 + 7, 1)
        );
        assert_eq!(
            sweep_all(&store, "2028-04-02T00:00:00+08:00", 1_000),
            (0, 0, 1)
        );
        assert_eq!(stats(&store).expired, 7);
    }

    #[test]
    fn a_month_whose_walk_left_a_coupon_to_a_redemption_in_flight_is_walked_again() {
        let store = MemoryStore::default();
        let mut c = campaign("c");
        c.stock = 100;
        c.shards = 1;
        block_on(create(&store, c, crate::ops::testing::setup_time())).expect("campaign");
        let codes = claim_many(&store, 0..3, "2028-02-10T10:00:00+08:00");
        let keys = CampaignKeys::new(&CampaignId::parse("c").expect("id"));
        let first = block_on(store.get(&keys.month_slot(
            YearMonth::parse("2028-02").expect("month"),
            0,
            1,
        )));
        let first = String::from_utf8(first.expect("get").expect("slot")).expect("code");
        assert!(codes.contains(&first));
        // A redemption of the first coupon took its lock and is still running
        // when the sweep walks the month, one coupon a call.
        let at = ts("2028-03-02T00:00:00+08:00");
        let lock = CouponKeys::new(&CouponCode::parse(&first).expect("code")).lock(0);
        block_on(crate::lease::own(&store, &lock, 1, at)).expect("lock");
        assert_eq!(sweep_all(&store, "2028-03-02T00:00:00+08:00", 1), (2, 3, 3));
        // Its owner died: a lease later the next walk takes the lock over.
        let later = (at + crate::lease::LEASE).to_string();
        assert_eq!(sweep_all(&store, &later, 1).0, 1);
        assert_eq!(stats(&store).expired, 3);
    }

    #[test]
    fn a_recount_reads_no_more_slots_than_a_call_may_examine() {
        let store = store_with_coupons(5);
        // The claim window has closed: the fence goes up, and a lease later
        // the recount reads the 5 index slots, 2 a call at most.
        let closed = ts("2028-02-15T00:00:00+08:00");
        let first = block_on(sweep(&store, request(None, None, None), closed, || false));
        assert_eq!(first.expect("sweep").next_cursor, None);
        let settled = (closed + crate::lease::LEASE).to_string();
        let mut cursor = None;
        let mut examined = Vec::new();
        loop {
            let step = block_on(sweep(
                &store,
                request(None, Some(2), cursor),
                ts(&settled),
                || false,
            ));
            let step = step.expect("sweep");
            examined.push(step.examined);
            cursor = step.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert!(examined.iter().all(|n| *n <= 2), "{examined:?}");
        assert_eq!(examined.iter().sum::<u64>(), 5, "{examined:?}");
    }

    #[test]
    fn a_call_out_of_time_stops_with_a_cursor_and_the_walk_resumes_there() {
        let store = store_with_coupons(5);
        let now = ts("2028-03-02T00:00:00+08:00");
        // Time is up once two coupons have expired.
        let out_of_time = || {
            let values = store.values.borrow();
            values.get("c:c:expirations:0").map(Vec::as_slice) == Some(b"2")
        };
        let first =
            block_on(sweep(&store, request(None, None, None), now, out_of_time)).expect("sweep");
        assert_eq!((first.examined, first.expired), (2, 2));
        let cursor = first.next_cursor.expect("a cursor");
        let rest = block_on(sweep(
            &store,
            request(None, None, Some(cursor)),
            now,
            || false,
        ))
        .expect("resume");
        assert_eq!(
            (rest.examined, rest.expired, rest.next_cursor),
            (3, 3, None)
        );
    }

    fn request(
        as_of: Option<&str>,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> ExpirationRequest {
        ExpirationRequest {
            as_of: as_of.map(ts),
            limit,
            cursor,
            partition: None,
        }
    }

    #[test]
    fn nothing_expires_before_month_end() {
        let store = store_with_coupons(3);
        let at = ts("2028-02-29T23:59:59.999+08:00");
        let swept =
            block_on(sweep(&store, request(None, None, None), at, || false)).expect("sweep");
        assert_eq!(
            swept,
            Swept {
                examined: 0,
                expired: 0,
                returned: 0,
                settled: 0,
                next_cursor: None
            }
        );
    }

    #[test]
    fn the_sweep_walks_in_bounded_resumable_steps_and_is_idempotent() {
        let store = store_with_coupons(7);
        let now = "2028-03-02T00:00:00+08:00";
        assert_eq!(sweep_all(&store, now, 3), (7, 7, 3));
        assert_eq!(sweep_all(&store, now, 1_000), (0, 0, 1));
        let stats = stats(&store);
        assert_eq!((stats.expired, stats.expired_value), (7, 7 * 500));
    }

    #[test]
    fn bad_requests_are_refused() {
        let store = store_with_coupons(0);
        let now = ts("2028-03-02T00:00:00+08:00");
        let future = block_on(sweep(
            &store,
            request(Some("2028-03-03T00:00:00Z"), None, None),
            now,
            || false,
        ));
        assert_eq!(future.unwrap_err().field(), Some("as_of"));
        let zero = block_on(sweep(&store, request(None, Some(0), None), now, || false));
        assert_eq!(zero.unwrap_err().field(), Some("limit"));
        let junk = block_on(sweep(
            &store,
            request(None, None, Some("x".into())),
            now,
            || false,
        ));
        assert_eq!(junk.unwrap_err().field(), Some("cursor"));
        for partition in ["4/4", "0/0", "1/65", "1", "a/2", "-1/2"] {
            let mut bad = request(None, None, None);
            bad.partition = Some(partition.into());
            let refused = block_on(sweep(&store, bad, now, || false));
            assert_eq!(
                refused.unwrap_err().field(),
                Some("partition"),
                "{partition}"
            );
        }
    }

    #[test]
    fn partitions_walked_side_by_side_expire_each_coupon_once() {
        let store = store_with_coupons(40);
        let now = ts("2028-03-02T00:00:00+08:00");
        // Four partitions, a call of each in turn, three slots a call.
        let mut cursors: Vec<Option<Option<String>>> = vec![Some(None); 4];
        let (mut expired, mut examined) = (0, 0);
        while cursors.iter().any(Option::is_some) {
            for (index, cursor) in cursors.iter_mut().enumerate() {
                let Some(from) = cursor.take() else { continue };
                let mut call = request(None, Some(3), from);
                call.partition = Some(format!("{index}/4"));
                let swept = block_on(sweep(&store, call, now, || false)).expect("sweep");
                expired += swept.expired;
                examined += swept.examined;
                *cursor = swept.next_cursor.map(Some);
            }
        }
        assert_eq!((expired, examined), (40, 40));
        assert_eq!(stats(&store).expired, 40);
        // Each partition marked the month for itself: walked again, it
        // reads nothing.
        let mut again = request(None, None, None);
        again.partition = Some("2/4".into());
        let swept = block_on(sweep(&store, again, now, || false)).expect("sweep");
        assert_eq!((swept.examined, swept.expired), (0, 0));
        // The whole walk has its own mark: it reads every slot, expires none.
        assert_eq!(
            sweep_all(&store, "2028-03-02T00:00:00+08:00", 1000),
            (0, 40, 1)
        );
    }

    #[test]
    fn campaigns_and_months_count_against_a_call_so_later_campaigns_are_swept() {
        // A campaign whose claim window opened in the year 1000, created first.
        let store = MemoryStore::default();
        let mut old = campaign("old");
        old.claim_starts_at = ts("1000-01-02T00:00:00+08:00");
        block_on(create(&store, old, crate::ops::testing::setup_time())).expect("old campaign");
        let mut c = campaign("c");
        c.stock = 100;
        block_on(create(&store, c, crate::ops::testing::setup_time())).expect("campaign");
        claim_many(&store, 0..3, "2028-02-10T10:00:00+08:00");
        let (expired, examined, calls) = sweep_all(&store, "2028-03-02T00:00:00+08:00", 1_000);
        assert_eq!((expired, examined), (3, 3));
        // 12,338 months of the old campaign at MAX_VISITS per call.
        assert!(calls > 12, "{calls} calls");
    }

    #[test]
    fn a_walking_sweep_stops_expiring_once_the_campaign_is_re_dated() {
        // Re-dates campaign "c" (to the end of April 2028) right after the
        // sweep records its first expiration, as an operator's `PUT` landing
        // while a sweep call is walking.
        let store = store_with_coupons(5);
        *store.hook.borrow_mut() = Some(Box::new(|store, call| {
            let Call::Write { entries } = call else {
                return Ok(());
            };
            if entries.iter().any(|(key, _)| key.contains(":end:")) {
                let later = Dating {
                    revision: 1,
                    expiry: crate::expiry::ExpiryRule::EndOfMonth {
                        month: YearMonth::parse("2028-04").expect("month"),
                    },
                    revived_at: None,
                    revived_revision: None,
                    epoch: 0,
                };
                let register = CampaignKeys::new(&CampaignId::parse("c").expect("id")).dating();
                let later = serde_json::to_vec(&later).expect("json");
                store.values.borrow_mut().insert(register, later);
            }
            Ok(())
        }));
        let now = ts("2028-03-02T00:00:00+08:00");
        let first =
            block_on(sweep(&store, request(None, None, None), now, || false)).expect("sweep");
        // One coupon expired before the re-dating; the rest follow the new rule.
        assert_eq!(first.expired, 1);
        let rest = block_on(sweep(
            &store,
            request(None, None, first.next_cursor),
            now,
            || false,
        ))
        .expect("sweep");
        assert_eq!((rest.expired, rest.next_cursor), (0, None));
        assert_eq!(stats(&store).expired, 1);
    }
}
