//! The operator's campaign API: create, list, read with stats, pause and
//! resume claims, freeze and unfreeze redemptions.

use super::brake::{self, Brake, Note};
use super::{encode, ledger, load_campaign};
use crate::campaign::{Campaign, CampaignId};
use crate::error::{Error, Result};
use crate::keys::{self, CampaignKeys};
use crate::lease::{self, Ownership};
use crate::store::{Store, read_counter};
use crate::time::render;
use jiff::Timestamp;
use serde::Serialize;

/// Counts kept by increments: equal to the stored coupons once the sweep has
/// settled them (see `ledger`, and `recount` for `claimed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub claimed: i64,
    pub redeemed: i64,
    pub expired: i64,
    /// The face value of the coupons in `expired`: discount that lapsed unused.
    pub expired_value: i64,
    pub remaining_stock: i64,
    /// The face value of the coupons claimed, when there is a budget: what
    /// they may cost at most.
    pub budget_used: i64,
    /// The discount redemptions gave (a percent coupon's depends on the
    /// order), less what cancels gave back, over those the sweep has settled.
    pub discount_given: i64,
    /// Redemptions and cancels since the sweep last settled, whose amounts
    /// `discount_given` does not include yet.
    pub discount_unsettled: i64,
    /// The coupons the campaign may ever issue: the stock, or fewer if the
    /// budget runs out first.
    pub capacity: i64,
    /// Coupons still to be issued: `capacity - claimed`. Claims answer
    /// `sold_out` once it is 0, whatever `remaining_stock` says.
    pub remaining: i64,
    /// Which limit sets `capacity`.
    pub binding_limit: BindingLimit,
}

/// The limit that caps a campaign's coupons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingLimit {
    Stock,
    Budget,
    /// The budget pays for exactly the stock.
    Both,
}

impl BindingLimit {
    fn of(campaign: &Campaign) -> BindingLimit {
        let Some(budget) = campaign.budget else {
            return BindingLimit::Stock;
        };
        let by_budget = budget.minor() / campaign.discount.face_value().minor().max(1);
        match by_budget.cmp(&i64::try_from(campaign.stock).unwrap_or(i64::MAX)) {
            std::cmp::Ordering::Less => BindingLimit::Budget,
            std::cmp::Ordering::Equal => BindingLimit::Both,
            std::cmp::Ordering::Greater => BindingLimit::Stock,
        }
    }
}

/// A campaign in a list: as created, with the rule in force and whether
/// claims are paused; its stats are one `GET /campaigns/{id}` away.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignSummary {
    #[serde(flatten)]
    pub campaign: serde_json::Value,
    pub paused: bool,
    pub closed: bool,
    pub frozen: bool,
    pub expiry_revision: i64,
    pub limits_revision: i64,
}

/// A page of campaigns, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignPage {
    pub campaigns: Vec<CampaignSummary>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Campaigns a page holds at most, and by default.
pub const MAX_PAGE: u32 = 100;
pub const DEFAULT_PAGE: u32 = 20;

/// A campaign as the operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignView {
    #[serde(flatten)]
    pub campaign: serde_json::Value,
    /// Claims are paused: see [`set_paused`] (always, once closed).
    pub paused: bool,
    /// The claim window was closed early, for good: see [`close`].
    pub closed: bool,
    /// When it was closed, in the campaign's zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    /// Redemptions are frozen: see [`set_frozen`].
    pub frozen: bool,
    /// Re-datings so far (`GET /campaigns/{id}/expiry` lists them).
    pub expiry_revision: i64,
    /// The latest change of stock, budget or claim rate (0: as created;
    /// `GET /campaigns/{id}/limits` lists them).
    pub limits_revision: i64,
    pub stats: Stats,
}

/// Seconds a claim that found the stock empty makes the public read say
/// `sold_out`: the read takes no count of the stock (see [`public`]).
pub const SOLD_OUT_SHOWN_SECONDS: i64 = 60;

/// A campaign as a shop's pages show it: the offer and whether it can be
/// claimed now, without the operator's stats and controls.
#[derive(Debug, Clone, Serialize)]
pub struct PublicCampaign {
    pub id: CampaignId,
    pub name: String,
    pub currency: crate::money::Currency,
    pub discount: crate::discount::Discount,
    pub min_order_amount: crate::money::Amount,
    pub per_user_limit: u32,
    pub claim_starts_at: String,
    pub claim_ends_at: String,
    pub time_zone: String,
    pub expiry: crate::expiry::ExpiryRule,
    pub categories: Vec<String>,
    pub state: PublicState,
    /// `state` is `open`: a claim now may get a coupon.
    pub claimable: bool,
}

/// Where a campaign's claims stand, as the public may know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicState {
    Upcoming,
    Open,
    /// The operator paused claims.
    Paused,
    /// A claim found the stock empty within the last minute.
    SoldOut,
    /// The claim window is over, or was closed.
    Ended,
}

/// The public read of campaign `id` at `now`: one round trip (the record,
/// the rule in force, the claims brake and the sold-out hint), so a shop's
/// pages may read it as often as claims come. It counts no stock: `sold_out`
/// means a claim found every shard empty in the last minute, so a sold-out
/// campaign nobody tried lately reads `open` (a claim then answers
/// `sold_out`), and one raised since reads `sold_out` for up to a minute.
pub async fn public(store: &impl Store, id: &CampaignId, now: Timestamp) -> Result<PublicCampaign> {
    let keys = CampaignKeys::new(id);
    let [record, dating, brake_counter, sold_out] = super::get_array(
        store,
        [keys.record(), keys.dating(), keys.brake(), keys.sold_out()],
    )
    .await?;
    let record = record.ok_or(Error::CampaignNotFound)?;
    let (campaign, _) = super::with_dating(&keys, &record, dating.as_deref())?;
    let sold_out_at = sold_out
        .as_deref()
        .and_then(|b| std::str::from_utf8(b).ok()?.parse::<i64>().ok());
    let state = if now < campaign.claim_starts_at {
        PublicState::Upcoming
    } else if now >= campaign.claim_ends_at || brake::is_closed_stored(brake_counter.as_deref()) {
        PublicState::Ended
    } else if brake::is_on_stored(brake_counter.as_deref()) {
        PublicState::Paused
    } else if sold_out_at.is_some_and(|s| now.as_second() - s < SOLD_OUT_SHOWN_SECONDS) {
        PublicState::SoldOut
    } else {
        PublicState::Open
    };
    let zone = campaign.zone()?;
    Ok(PublicCampaign {
        claim_starts_at: render(campaign.claim_starts_at, &zone),
        claim_ends_at: render(campaign.claim_ends_at, &zone),
        id: campaign.id,
        name: campaign.name,
        currency: campaign.currency,
        discount: campaign.discount,
        min_order_amount: campaign.min_order_amount,
        per_user_limit: campaign.per_user_limit,
        time_zone: campaign.time_zone,
        expiry: campaign.expiry,
        categories: campaign.categories,
        claimable: state == PublicState::Open,
        state,
    })
}

/// Whether a create made the campaign or found the identical one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExisted,
}

/// Creates a campaign. The request that owns `c:{id}:owner` (a lease, so a
/// creator that died is taken over) writes it; any other finds the stored
/// one: identical is fine, different is a conflict, not written yet is in
/// progress.
pub async fn create(
    store: &impl Store,
    campaign: Campaign,
    now: Timestamp,
) -> Result<(Created, CampaignView)> {
    campaign.validate()?;
    let keys = CampaignKeys::new(&campaign.id);
    let owned = lease::own(store, &keys.owner(), 1, now).await?;
    // A lapsed creator may have written it; anyone else finds what is there.
    if owned != Ownership::Owned(1) {
        match load_campaign(store, &campaign.id).await? {
            // Once re-dated, the campaign differs from any create body with the old rule.
            Some((existing, dating)) if existing == campaign => {
                return Ok((
                    Created::AlreadyExisted,
                    view(store, &existing, &dating).await?,
                ));
            }
            Some(_) => return Err(Error::CampaignExists),
            None if !matches!(owned, Ownership::Owned(_)) => return Err(Error::RequestInProgress),
            None => {}
        }
    }
    // Index first, record second: the sweep skips an index slot without a
    // record, and walks a campaign twice harmlessly if a lapsed creator
    // indexed it too.
    let slot = store.increment(keys::CAMPAIGN_SEQ, 1).await?;
    store
        .set_many(&[
            (
                keys::campaign_slot(slot),
                campaign.id.as_str().as_bytes().to_vec(),
            ),
            (keys.record(), encode(&campaign)),
            (
                keys.created(),
                now.as_millisecond().to_string().into_bytes(),
            ),
        ])
        .await?;
    let dating = super::dating::Dating::original(&campaign);
    Ok((Created::New, view(store, &campaign, &dating).await?))
}

/// Up to `limit` campaigns in order of creation, from the index slot after
/// `after` (0 for the first page). Three round trips whatever the page
/// holds: the slot counter, the slots, then every record, dating and brake
/// at once. A slot whose record is missing (a create in flight, or one that
/// failed) is skipped; a campaign a lapsed creator indexed twice appears
/// once in a page.
pub async fn list(store: &impl Store, after: i64, limit: u32) -> Result<CampaignPage> {
    if after < 0 {
        return Err(Error::invalid("after", "must be a cursor from `next`"));
    }
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid("limit", format!("must be 1 to {MAX_PAGE}")));
    }
    let last = read_counter(store, keys::CAMPAIGN_SEQ).await?;
    let end = last.min(after.saturating_add(i64::from(limit)));
    let slots: Vec<String> = (after.saturating_add(1)..=end)
        .map(keys::campaign_slot)
        .collect();
    let mut ids: Vec<CampaignId> = Vec::new();
    if !slots.is_empty() {
        for (key, id) in slots.iter().zip(store.get_many(&slots).await?) {
            let Some(id) = id else { continue };
            let id = CampaignId::parse(&String::from_utf8_lossy(&id))
                .ok_or_else(|| Error::Internal(format!("{key} holds no campaign id")))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    let mut campaigns = Vec::with_capacity(ids.len());
    if !ids.is_empty() {
        let wanted: Vec<String> = ids
            .iter()
            .map(CampaignKeys::new)
            .flat_map(|k| [k.record(), k.dating(), k.brake(), k.freeze(), k.limits()])
            .collect();
        let values = store.get_many(&wanted).await?;
        for (id, [record, dating, paused, frozen, limits]) in ids.iter().zip(super::groups(values))
        {
            let Some(record) = record else { continue };
            let keys = CampaignKeys::new(id);
            let (campaign, dating) = super::with_dating(&keys, &record, dating.as_deref())?;
            let limits = super::limits::parse(&keys.limits(), limits.as_deref(), &campaign)?;
            campaigns.push(CampaignSummary {
                campaign: campaign_json(&limits.applied(&campaign))?,
                paused: brake::is_on_stored(paused.as_deref()),
                closed: brake::is_closed_stored(paused.as_deref()),
                frozen: brake::is_on_stored(frozen.as_deref()),
                expiry_revision: dating.revision,
                limits_revision: limits.revision,
            });
        }
    }
    Ok(CampaignPage {
        campaigns,
        next: (end < last).then(|| end.to_string()),
    })
}

/// Campaign `id` with its dating, or `campaign_not_found`.
async fn existing(
    store: &impl Store,
    id: &CampaignId,
) -> Result<(Campaign, super::dating::Dating)> {
    load_campaign(store, id)
        .await?
        .ok_or(Error::CampaignNotFound)
}

pub async fn get(store: &impl Store, id: &CampaignId) -> Result<CampaignView> {
    let (campaign, dating) = existing(store, id).await?;
    view(store, &campaign, &dating).await
}

/// Pauses or resumes claims. A pause engages the brake on every stock shard
/// before it answers, so once it answers paused no claim on any host takes
/// stock until a resume; claims read the transition counter first only to
/// fail fast. Safe under any interleaving of pauses and resumes, retries and
/// failures: see [`brake`].
pub async fn set_paused(
    store: &impl Store,
    id: &CampaignId,
    paused: bool,
    note: Note,
    now: Timestamp,
) -> Result<CampaignView> {
    let note = note.checked()?;
    let (campaign, dating) = existing(store, id).await?;
    Brake::claims(&campaign)
        .set(store, paused, &note, now)
        .await?;
    view(store, &campaign, &dating).await
}

/// Freezes or unfreezes redemptions (a misconfigured discount keeps paying
/// out until someone stops it); claims, validations, cancels and the sweep go
/// on. A freeze engages the brake on every redemption ledger before it
/// answers, so once it answers frozen no redemption on any host is
/// acknowledged until an unfreeze: a redemption in flight that meets the
/// brake at its ledger increment answers `redemptions_frozen` and writes
/// nothing. Its coupon's lock lapses like a dead redeemer's, so that coupon
/// redeems again at most a lease (90 s) after the unfreeze. Redemptions read
/// the transition counter with the campaign, only to fail fast.
pub async fn set_frozen(
    store: &impl Store,
    id: &CampaignId,
    frozen: bool,
    note: Note,
    now: Timestamp,
) -> Result<CampaignView> {
    let note = note.checked()?;
    let (campaign, dating) = existing(store, id).await?;
    Brake::redemptions(&campaign)
        .set(store, frozen, &note, now)
        .await?;
    view(store, &campaign, &dating).await
}

/// Closes the claim window now, for good (a sale that must not go on):
/// once this answers, no host issues another coupon of the campaign (the
/// claims brake, closed so that no resume can release it), and claims answer
/// `campaign_not_active` as after the window. Validations, redemptions,
/// cancels and the sweep go on; a resume answers `campaign_not_active`.
/// Closing a closed campaign changes nothing.
pub async fn close(
    store: &impl Store,
    id: &CampaignId,
    note: Note,
    now: Timestamp,
) -> Result<CampaignView> {
    let note = note.checked()?;
    let (campaign, dating) = existing(store, id).await?;
    Brake::claims(&campaign).close(store, &note, now).await?;
    view(store, &campaign, &dating).await
}

/// When the claim window was first closed: the earliest close recorded.
pub(crate) async fn closed_at(
    store: &impl Store,
    keys: &CampaignKeys,
) -> Result<Option<Timestamp>> {
    let closes = read_counter(store, &keys.closes()).await?;
    let records: Vec<String> = (1..=closes.min(10)).map(|k| keys.close_record(k)).collect();
    if records.is_empty() {
        return Ok(None);
    }
    for (key, bytes) in records.iter().zip(store.get_many(&records).await?) {
        if let Some(bytes) = bytes {
            return Ok(Some(super::decode::<brake::Transition>(key, &bytes)?.at));
        }
    }
    Ok(None)
}

/// Every pause, resume, freeze and unfreeze of a campaign (the latest
/// hundred of each brake), oldest first, with who asked and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrakeHistory {
    pub transitions: Vec<brake::Transition>,
}

pub async fn brake_history(store: &impl Store, id: &CampaignId) -> Result<BrakeHistory> {
    let (campaign, _) = existing(store, id).await?;
    Ok(BrakeHistory {
        transitions: brake::history(store, &campaign).await?,
    })
}

pub(crate) async fn view(
    store: &impl Store,
    campaign: &Campaign,
    dating: &super::dating::Dating,
) -> Result<CampaignView> {
    let keys = CampaignKeys::new(&campaign.id);
    let (limits, tried) = super::limits::in_force(store, campaign).await?;
    let in_force = limits.applied(campaign);
    let stock = i64::try_from(in_force.stock).unwrap_or(i64::MAX);
    let transitions = read_counter(store, &keys.brake()).await?;
    let paused = brake::is_on(transitions);
    let closed = brake::is_closed(transitions);
    let closed_at = match closed {
        true => {
            let zone = campaign.zone()?;
            closed_at(store, &keys).await?.map(|at| render(at, &zone))
        }
        false => None,
    };
    let frozen = Brake::redemptions(campaign).is_on(store).await?;
    let shards = super::limits::shards(store, campaign, tried).await?;
    let claimed: i64 = shards.iter().map(|s| s.claimed()).sum();
    // As the counters enforce it: what the limits in force allow, or the
    // coupons issued if claims racing a lowering took more.
    let capacity: i64 = shards.iter().map(|s| s.capacity()).sum();
    let expired = ledger::count(store, &[keys.expirations(dating.epoch)]).await?;
    let shards = 0..campaign.shard_count();
    let redemptions: Vec<_> = shards.clone().map(|s| keys.redemptions(s)).collect();
    let cancels: Vec<_> = shards.map(|s| keys.cancels(s)).collect();
    // A position a dead canceller left empty counts until it is settled:
    // never below none meanwhile.
    let (redemptions, cancels) = (
        ledger::tally(store, &redemptions).await?,
        ledger::tally(store, &cancels).await?,
    );
    let redeemed = (redemptions.count - cancels.count).max(0);
    let stats = Stats {
        claimed,
        redeemed,
        expired,
        expired_value: expired.saturating_mul(campaign.discount.face_value().minor()),
        remaining_stock: (stock - claimed).max(0),
        budget_used: match in_force.budget {
            Some(_) => claimed.saturating_mul(campaign.discount.face_value().minor()),
            None => 0,
        },
        discount_given: (redemptions.amount - cancels.amount).max(0),
        discount_unsettled: redemptions.unsettled + cancels.unsettled,
        capacity,
        remaining: (capacity - claimed).max(0),
        binding_limit: BindingLimit::of(&in_force),
    };
    Ok(CampaignView {
        campaign: campaign_json(&in_force)?,
        paused,
        closed,
        closed_at,
        frozen,
        expiry_revision: dating.revision,
        limits_revision: limits.revision,
        stats,
    })
}

/// The campaign as JSON, its claim window in its own zone.
fn campaign_json(campaign: &Campaign) -> Result<serde_json::Value> {
    let zone = campaign.zone()?;
    let mut json = serde_json::to_value(campaign).map_err(|e| Error::Internal(e.to_string()))?;
    json["claim_starts_at"] = render(campaign.claim_starts_at, &zone).into();
    json["claim_ends_at"] = render(campaign.claim_ends_at, &zone).into();
    Ok(json)
}

/// Reads the campaign stored in an index slot, with its dating (used by the sweep).
pub(crate) async fn load_slot(
    store: &impl Store,
    slot: i64,
) -> Result<Option<(Campaign, super::dating::Dating)>> {
    let key = keys::campaign_slot(slot);
    let Some(id) = store.get(&key).await? else {
        return Ok(None);
    };
    let id: CampaignId = CampaignId::parse(&String::from_utf8_lossy(&id))
        .ok_or_else(|| Error::Internal(format!("{key} holds no campaign id")))?;
    load_campaign(store, &id).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::campaign;
    use crate::store::memory::{Call, MemoryStore};
    use futures::executor::block_on;

    #[test]
    fn the_public_read_says_where_claims_stand() {
        use crate::ops::testing::ts;
        let store = MemoryStore::default();
        let mut c = campaign("pub");
        c.stock = 1;
        c.shards = 1;
        let id = c.id.clone();
        let state = |at: &str| {
            let read = block_on(public(&store, &id, ts(at))).expect("public");
            assert_eq!(read.claimable, read.state == PublicState::Open);
            read.state
        };
        block_on(create(&store, c, crate::ops::testing::setup_time())).expect("create");
        assert_eq!(state("2027-12-31T23:59:59+08:00"), PublicState::Upcoming);
        assert_eq!(state("2028-02-10T10:00:00+08:00"), PublicState::Open);
        let pause = |on| {
            block_on(set_paused(
                &store,
                &id,
                on,
                Note::default(),
                ts("2028-02-10T10:00:00+08:00"),
            ))
        };
        pause(true).expect("paused");
        assert_eq!(state("2028-02-10T10:00:01+08:00"), PublicState::Paused);
        pause(false).expect("resumed");
        let claim_at = |user: &str, at: &str| {
            block_on(crate::ops::claim::claim(
                &store,
                &crate::auth::UserId(user.into()),
                "k",
                crate::ops::claim::ClaimRequest {
                    campaign_id: id.clone(),
                },
                ts(at),
                crate::code::CouponCode::from_random([user.len() as u8; crate::code::RANDOM_BYTES]),
            ))
        };
        claim_at("alice", "2028-02-10T10:00:02+08:00").expect("the last coupon");
        assert!(claim_at("bob", "2028-02-10T10:00:03+08:00").is_err());
        assert_eq!(state("2028-02-10T10:01:02+08:00"), PublicState::SoldOut);
        // A minute on, nobody tried: the read counts no stock.
        assert_eq!(state("2028-02-10T10:01:03+08:00"), PublicState::Open);
        assert_eq!(state("2028-02-15T00:00:00+08:00"), PublicState::Ended);
        let read = block_on(public(&store, &id, ts("2028-02-10T10:00:00+08:00"))).expect("read");
        let json = serde_json::to_value(&read).expect("json");
        assert!(
            json.get("stats").is_none() && json.get("stock").is_none(),
            "{json}"
        );
        assert_eq!(json["claim_ends_at"], "2028-02-15T00:00:00+08:00");
    }

    #[test]
    fn create_is_idempotent_for_the_same_body_and_conflicts_otherwise() {
        let store = MemoryStore::default();
        block_on(async {
            let (created, view) = create(
                &store,
                campaign("spring"),
                crate::ops::testing::setup_time(),
            )
            .await
            .expect("create");
            assert_eq!(created, Created::New);
            assert_eq!(view.stats.remaining_stock, 10);
            let (again, _) = create(
                &store,
                campaign("spring"),
                crate::ops::testing::setup_time(),
            )
            .await
            .expect("same body");
            assert_eq!(again, Created::AlreadyExisted);
            let mut other = campaign("spring");
            other.stock = 11;
            assert_eq!(
                create(&store, other, crate::ops::testing::setup_time())
                    .await
                    .unwrap_err(),
                Error::CampaignExists
            );
        });
    }

    #[test]
    fn concurrent_creates_make_exactly_one_owner() {
        let store = MemoryStore::default();
        let results = block_on(futures::future::join_all((0..8).map(|i| {
            let mut c = campaign("race");
            c.stock = 10 + i % 2;
            create(&store, c, crate::ops::testing::setup_time())
        })));
        let created = results
            .iter()
            .filter(|r| matches!(r, Ok((Created::New, _))))
            .count();
        assert_eq!(created, 1);
        assert_eq!(block_on(read_counter(&store, keys::CAMPAIGN_SEQ)), Ok(1));
        // Whoever lost either found the identical campaign or a conflict, never a second write.
        let stored = block_on(get(&store, &CampaignId::parse("race").unwrap())).expect("stored");
        for result in results {
            match result {
                Ok((_, view)) => assert_eq!(view.campaign, stored.campaign),
                // A loser that looked before the owner wrote is told to retry.
                Err(e) => assert!(
                    matches!(e, Error::CampaignExists | Error::RequestInProgress),
                    "{e:?}"
                ),
            }
        }
    }

    #[test]
    fn a_create_whose_creator_died_is_completed_by_a_retry_after_the_lease() {
        let store = MemoryStore::default();
        let id = CampaignId::parse("orphan").unwrap();
        block_on(async {
            // The creator took the id and died before writing the campaign.
            store
                .increment(&CampaignKeys::new(&id).owner(), 1)
                .await
                .expect("owner");
            let retry = create(&store, campaign("orphan"), now()).await;
            assert_eq!(retry.unwrap_err(), Error::RequestInProgress);
            let later = now() + crate::lease::LEASE;
            let (created, _) = create(&store, campaign("orphan"), later)
                .await
                .expect("taken over");
            assert_eq!(created, Created::New);
            assert!(get(&store, &id).await.is_ok());
        });
    }

    fn now() -> Timestamp {
        crate::ops::testing::ts("2028-02-10T10:00:00+08:00")
    }

    fn ids(page: &CampaignPage) -> Vec<String> {
        page.campaigns
            .iter()
            .map(|c| c.campaign["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn list_pages_in_order_of_creation() {
        let store = MemoryStore::default();
        block_on(async {
            for id in ["a", "b", "c", "d", "e"] {
                create(&store, campaign(id), crate::ops::testing::setup_time())
                    .await
                    .expect("create");
            }
            set_paused(
                &store,
                &CampaignId::parse("b").unwrap(),
                true,
                Note::default(),
                now(),
            )
            .await
            .expect("pause");
            let first = list(&store, 0, 2).await.expect("page 1");
            assert_eq!(ids(&first), ["a", "b"]);
            assert!(!first.campaigns[0].paused && first.campaigns[1].paused);
            assert_eq!(first.next.as_deref(), Some("2"));
            let second = list(&store, 2, 2).await.expect("page 2");
            assert_eq!(ids(&second), ["c", "d"]);
            let last = list(&store, 4, 2).await.expect("page 3");
            assert_eq!((ids(&last), last.next), (vec!["e".to_owned()], None));
            assert!(list(&store, 5, 2).await.expect("past").campaigns.is_empty());
            let far = list(&store, i64::MAX, 100).await.expect("far past the end");
            assert!(far.campaigns.is_empty() && far.next.is_none());
        });
    }

    #[test]
    fn list_skips_a_slot_without_a_record_and_shows_a_campaign_indexed_twice_once() {
        let store = MemoryStore::default();
        block_on(async {
            create(&store, campaign("a"), crate::ops::testing::setup_time())
                .await
                .expect("create");
            // A creator that died after indexing, and a lapsed one that indexed "a" again.
            let ghost = store.increment(keys::CAMPAIGN_SEQ, 1).await.expect("seq");
            store
                .set(&keys::campaign_slot(ghost), b"ghost")
                .await
                .expect("slot");
            let again = store.increment(keys::CAMPAIGN_SEQ, 1).await.expect("seq");
            store
                .set(&keys::campaign_slot(again), b"a")
                .await
                .expect("slot");
            let page = list(&store, 0, 10).await.expect("list");
            assert_eq!(ids(&page), ["a"]);
            assert_eq!(page.next, None);
        });
    }

    #[test]
    fn list_refuses_a_bad_cursor_or_limit() {
        let store = MemoryStore::default();
        block_on(async {
            for (after, limit, field) in [(-1, 10, "after"), (0, 0, "limit"), (0, 101, "limit")] {
                let err = list(&store, after, limit).await.unwrap_err();
                assert_eq!(err.field(), Some(field), "{err:?}");
            }
        });
    }

    #[test]
    fn stats_name_the_limit_that_binds() {
        let store = MemoryStore::default();
        block_on(async {
            // 10 coupons of 500: a budget of 3,000 pays for 6.
            for (id, budget, binds, capacity) in [
                ("none", None, BindingLimit::Stock, 10),
                ("low", Some(3_000), BindingLimit::Budget, 6),
                ("exact", Some(5_000), BindingLimit::Both, 10),
                ("high", Some(9_999), BindingLimit::Stock, 10),
            ] {
                let mut c = campaign(id);
                c.budget = budget.and_then(crate::money::Amount::new);
                let (_, view) = create(&store, c, crate::ops::testing::setup_time())
                    .await
                    .expect("create");
                assert_eq!(view.stats.binding_limit, binds, "{id}");
                assert_eq!(view.stats.capacity, capacity, "{id}");
                assert_eq!(view.stats.remaining, capacity, "{id}");
                assert_eq!(view.stats.remaining_stock, 10, "{id}");
            }
        });
    }

    #[test]
    fn pause_is_idempotent() {
        let store = MemoryStore::default();
        block_on(async {
            create(&store, campaign("p"), crate::ops::testing::setup_time())
                .await
                .expect("create");
            let id = CampaignId::parse("p").unwrap();
            assert!(
                set_paused(&store, &id, true, Note::default(), now())
                    .await
                    .expect("pause")
                    .paused
            );
            assert!(
                set_paused(&store, &id, true, Note::default(), now())
                    .await
                    .expect("pause twice")
                    .paused
            );
            assert!(
                !set_paused(&store, &id, false, Note::default(), now())
                    .await
                    .expect("resume")
                    .paused
            );
            let missing = CampaignId::parse("nope").unwrap();
            assert_eq!(
                set_paused(&store, &missing, true, Note::default(), now())
                    .await
                    .unwrap_err(),
                Error::CampaignNotFound
            );
        });
    }

    #[test]
    fn every_transition_is_recorded_once_with_who_and_why() {
        use brake::{Action, Kind};
        let store = MemoryStore::default();
        let note = |by: &str, why: &str| Note {
            changed_by: Some(format!(" {by} ")),
            reason: Some(why.to_owned()),
        };
        block_on(async {
            create(&store, campaign("p"), crate::ops::testing::setup_time())
                .await
                .expect("create");
            let id = CampaignId::parse("p").unwrap();
            let later = now() + jiff::SignedDuration::from_secs(60);
            set_paused(&store, &id, true, note("ana", "bot traffic"), now())
                .await
                .expect("pause");
            // Already paused: no transition, nothing recorded.
            set_paused(&store, &id, true, note("bo", "again"), now())
                .await
                .expect("pause twice");
            set_frozen(&store, &id, true, note("ana", "wrong discount"), now())
                .await
                .expect("freeze");
            // A pause and a resume at once: each transition has its own record.
            let (a, b) = futures::future::join(
                set_paused(&store, &id, false, note("cy", "fixed"), later),
                set_paused(&store, &id, true, note("di", "not yet"), later),
            )
            .await;
            // One may find the other moving a shard: 409, retried later.
            for answer in [a.map(|_| ()), b.map(|_| ())] {
                assert!(
                    matches!(answer, Ok(()) | Err(Error::RequestInProgress)),
                    "{answer:?}"
                );
            }
            let history = brake_history(&store, &id).await.expect("history");
            let seen: Vec<_> = history
                .transitions
                .iter()
                .map(|t| {
                    let by = t.changed_by.as_deref().unwrap_or("");
                    (t.brake, t.transition, t.action, by, t.at)
                })
                .collect();
            assert_eq!(
                seen[..2],
                [
                    (Kind::Claims, 1, Action::Pause, "ana", now()),
                    (Kind::Redemptions, 1, Action::Freeze, "ana", now()),
                ]
            );
            assert_eq!(
                history.transitions[1].reason.as_deref(),
                Some("wrong discount")
            );
            // Whatever the interleaving, the numbers are unique and each
            // action matches its parity and its author.
            let mut numbers: Vec<i64> = seen[2..].iter().map(|t| t.1).collect();
            numbers.sort();
            numbers.dedup();
            assert_eq!(numbers.len(), seen.len() - 2);
            for (_, n, action, by, _) in &seen[2..] {
                let expected = if n % 2 == 1 {
                    (Action::Pause, "di")
                } else {
                    (Action::Resume, "cy")
                };
                assert_eq!((*action, *by), expected, "transition {n}");
            }
            // A reason past the limit is refused and changes nothing.
            let long = Note {
                changed_by: None,
                reason: Some("x".repeat(brake::MAX_REASON_LEN + 1)),
            };
            let before = store.values.borrow().clone();
            let refused = set_frozen(&store, &id, false, long, later)
                .await
                .unwrap_err();
            assert_eq!(refused.field(), Some("reason"));
            assert_eq!(*store.values.borrow(), before);
        });
    }

    /// Campaign "p" with `shards` stock shards, paused.
    async fn paused_campaign(store: &MemoryStore, shards: u32) -> CampaignId {
        let mut c = campaign("p");
        c.shards = shards;
        let id = c.id.clone();
        create(store, c, crate::ops::testing::setup_time())
            .await
            .expect("create");
        set_paused(store, &id, true, Note::default(), now())
            .await
            .expect("pause");
        id
    }

    #[test]
    fn a_close_is_final_whatever_resume_races_it() {
        use crate::auth::UserId;
        use crate::code::CouponCode;
        use crate::ops::claim::{ClaimRequest, claim};
        // Every interleaving a few store calls apart: the resume starts that
        // many calls after the close.
        for delay in 0..12 {
            let store = MemoryStore::default();
            block_on(async {
                let id = paused_campaign(&store, 2).await;
                let resume = async {
                    for _ in 0..delay {
                        crate::store::memory::yield_now().await;
                    }
                    set_paused(&store, &id, false, Note::default(), now()).await
                };
                let closing = close(&store, &id, Note::default(), now());
                let (closed, resumed) = futures::future::join(closing, resume).await;
                let closed = match closed {
                    Ok(view) => view,
                    // The resume held a shard's step: the retry closes.
                    Err(Error::RequestInProgress) => close(&store, &id, Note::default(), now())
                        .await
                        .expect("close again"),
                    Err(e) => panic!("close: {e:?}"),
                };
                assert!(closed.closed && closed.paused && closed.closed_at.is_some());
                assert!(
                    matches!(
                        resumed,
                        Ok(_) | Err(Error::CampaignNotActive | Error::RequestInProgress)
                    ),
                    "{resumed:?}"
                );
                // Closed stays closed: every shard braked, claims refused for
                // good, a resume refused.
                let keys = CampaignKeys::new(&id);
                for shard in 0..2 {
                    let counter = read_counter(&store, &keys.claimed(shard)).await;
                    assert!(
                        brake::is_engaged(counter.expect("counter")),
                        "delay {delay}"
                    );
                }
                let request = ClaimRequest {
                    campaign_id: id.clone(),
                };
                let code = CouponCode::from_random([1; crate::code::RANDOM_BYTES]);
                let refused = claim(&store, &UserId("u".into()), "k", request, now(), code).await;
                assert_eq!(refused.unwrap_err(), Error::CampaignNotActive);
                let again = set_paused(&store, &id, false, Note::default(), now()).await;
                assert_eq!(again.unwrap_err(), Error::CampaignNotActive);
                let history = brake_history(&store, &id).await.expect("history");
                let closes = history.transitions.iter();
                assert_eq!(
                    closes.filter(|t| t.action == brake::Action::Close).count(),
                    1
                );
            });
        }
    }

    #[test]
    fn overlapping_resumes_with_a_failure_never_release_a_shard_twice() {
        use crate::auth::UserId;
        use crate::code::CouponCode;
        use crate::ops::claim::{ClaimRequest, claim};
        // Fails every increment by `+2^40` before it applies while "failing"
        // is set: the step that gives a racing release back, or that moves a
        // shard's brake.
        let store = MemoryStore::default();
        *store.hook.borrow_mut() = Some(Box::new(|store, call| match call {
            Call::Increment { delta, .. }
                if delta == brake::OFFSET && store.values.borrow().contains_key("failing") =>
            {
                Err(crate::store::StoreError("refused".into()))
            }
            _ => Ok(()),
        }));
        block_on(async {
            let id = paused_campaign(&store, 1).await;
            store.values.borrow_mut().insert("failing".into(), vec![]);
            let (a, b) = futures::future::join(
                set_paused(&store, &id, false, Note::default(), now()),
                set_paused(&store, &id, false, Note::default(), now()),
            )
            .await;
            let _ = (a, b);
            store.values.borrow_mut().remove("failing");
            // Whatever the resumes answered, retries settle the brake: at
            // once, or once the failed step's lease has lapsed.
            let later = now() + crate::lease::LEASE;
            if set_paused(&store, &id, false, Note::default(), now())
                .await
                .is_err()
            {
                set_paused(&store, &id, false, Note::default(), later)
                    .await
                    .expect("resume");
            }
            let mut issued = 0;
            for i in 0..20u8 {
                let request = ClaimRequest {
                    campaign_id: id.clone(),
                };
                let user = UserId(format!("u{i}"));
                let code = CouponCode::from_random([i; crate::code::RANDOM_BYTES]);
                if claim(&store, &user, "k", request, later, code)
                    .await
                    .is_ok()
                {
                    issued += 1;
                }
            }
            assert_eq!(issued, 10, "a stock of 10");
        });
    }
}
