//! Re-dating a live campaign: the operator changes its expiry rule, and every
//! outstanding coupon follows at once.
//!
//! Coupons store no expiry: it is derived from the rule in force when read, so
//! a re-dating is one write of the register `c:{id}:expiry`, never a rewrite
//! of millions of coupons. Coupons the sweep already recorded as expired stay
//! expired, unless the change says to revive them: then every expiry recorded
//! before it is void (the coupon's next generation starts, and its state is
//! derived from the new rule), and `stats.expired` counts afresh.

use super::campaigns::{CampaignView, view};
use super::{decode, encode, load_campaign};
use crate::campaign::{Campaign, CampaignId};
use crate::coupon::Ending;
use crate::error::{Error, Result};
use crate::expiry::ExpiryRule;
use crate::keys::CampaignKeys;
use crate::store::{Store, read_counter};
use crate::time::{serde_rfc3339, serde_rfc3339_option};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The longest `changed_by` accepted.
pub const MAX_CHANGED_BY_LEN: usize = 64;

/// The expiry rule in force, and the revivals that void earlier expirations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dating {
    /// 0 as created; then the revision of the latest re-dating.
    pub revision: i64,
    pub expiry: ExpiryRule,
    /// Expirations the sweep recorded before this instant are void (for
    /// expirations recorded without a revision).
    #[serde(default, with = "serde_rfc3339_option")]
    pub revived_at: Option<Timestamp>,
    /// The revision of the latest revival: expirations decided under an
    /// earlier revision are void.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revived_revision: Option<i64>,
    /// Revivals so far: `stats.expired` counts since the latest.
    #[serde(default)]
    pub epoch: u32,
}

impl Dating {
    /// The dating of a campaign never re-dated.
    pub fn original(campaign: &Campaign) -> Dating {
        Dating {
            revision: 0,
            expiry: campaign.expiry,
            revived_at: None,
            revived_revision: None,
            epoch: 0,
        }
    }

    /// Whether `ending` is an expiration a later revival made void.
    pub fn voids(&self, ending: &Ending) -> bool {
        match ending {
            Ending::Expired {
                revision: Some(decided),
                ..
            } => self
                .revived_revision
                .is_some_and(|revived| *decided < revived),
            // Recorded before expirations carried their revision.
            Ending::Expired { at, swept_at, .. } => self
                .revived_at
                .is_some_and(|revived_at| swept_at.unwrap_or(*at) < revived_at),
            Ending::Redeemed(_) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedatingRequest {
    pub expiry: ExpiryRule,
    /// Also make coupons usable again that the sweep has already expired.
    #[serde(default)]
    pub revive_expired: bool,
    /// Who asks for it, for the record (the admin token names nobody).
    pub changed_by: String,
    /// Why, for the record.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One re-dating, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub revision: i64,
    pub changed_by: String,
    #[serde(with = "serde_rfc3339")]
    pub changed_at: Timestamp,
    pub from: ExpiryRule,
    pub to: ExpiryRule,
    pub revive_expired: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Changes the expiry rule of campaign `id` and records who did it. Once this
/// answers, every read of every coupon of the campaign sees the new rule.
///
/// Re-datings of one campaign are meant to come from one operator at a time:
/// two at once both get a revision and a record, and the later write wins.
pub async fn redate(
    store: &impl Store,
    id: &CampaignId,
    request: RedatingRequest,
    now: Timestamp,
) -> Result<CampaignView> {
    let changed_by = request.changed_by.trim();
    if changed_by.is_empty() || changed_by.chars().count() > MAX_CHANGED_BY_LEN {
        return Err(Error::invalid(
            "changed_by",
            format!("must be 1 to {MAX_CHANGED_BY_LEN} characters"),
        ));
    }
    let reason = super::brake::optional_text(
        request.reason.clone(),
        "reason",
        super::brake::MAX_REASON_LEN,
    )?;
    let (mut campaign, dating) = load_campaign(store, id)
        .await?
        .ok_or(Error::CampaignNotFound)?;
    let keys = CampaignKeys::new(id);
    // An instant already past means now: coupons end at once, never before.
    let expiry = match request.expiry {
        ExpiryRule::At { at } => ExpiryRule::At { at: at.max(now) },
        rule => rule,
    };
    // The new rule must suit the campaign as a created one would; a closed
    // campaign issues no more coupons, so its coupons may end at any instant.
    campaign.expiry = expiry;
    // A purge seals the campaign before it waits a lease and deletes: a
    // re-dating that read no seal has written by then (see `purge`).
    // Only the purge writes the seal: present is sealed.
    if store.get(&keys.purge()).await?.is_some() {
        return Err(Error::CampaignPurged);
    }
    let closed = super::brake::is_closed(read_counter(store, &keys.brake()).await?);
    if !(closed && matches!(expiry, ExpiryRule::At { .. })) {
        campaign.validate()?;
    }
    let revision = store.increment(&keys.dating_seq(), 1).await?;
    let next = Dating {
        revision,
        expiry,
        revived_at: match request.revive_expired {
            true => Some(now),
            false => dating.revived_at,
        },
        revived_revision: match request.revive_expired {
            true => Some(revision),
            false => dating.revived_revision,
        },
        epoch: dating
            .epoch
            .saturating_add(u32::from(request.revive_expired)),
    };
    let change = Change {
        revision,
        changed_by: changed_by.to_owned(),
        changed_at: now,
        from: dating.expiry,
        to: expiry,
        revive_expired: request.revive_expired,
        reason,
    };
    // The record first: a rule in force always has its record.
    store
        .set(&keys.dating_change(revision), &encode(&change))
        .await?;
    store.set(&keys.dating(), &encode(&next)).await?;
    view(store, &campaign, &next).await
}

/// The re-datings of a campaign, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct History {
    pub changes: Vec<Change>,
}

/// Every re-dating of campaign `id`.
pub async fn history(store: &impl Store, id: &CampaignId) -> Result<History> {
    load_campaign(store, id)
        .await?
        .ok_or(Error::CampaignNotFound)?;
    let keys = CampaignKeys::new(id);
    let count = read_counter(store, &keys.dating_seq()).await?;
    let wanted: Vec<String> = (1..=count).map(|n| keys.dating_change(n)).collect();
    let found = store.get_many(&wanted).await?;
    let mut changes = Vec::with_capacity(wanted.len());
    // A revision without a record is a re-dating still in flight, or one that died.
    for (key, bytes) in wanted.iter().zip(found) {
        if let Some(bytes) = bytes {
            changes.push(decode::<Change>(key, &bytes)?);
        }
    }
    Ok(History { changes })
}

/// The dating stored in `bytes` (the `c:{id}:expiry` register), or the original one.
pub(crate) fn parse(key: &str, bytes: Option<&[u8]>, campaign: &Campaign) -> Result<Dating> {
    match bytes {
        Some(bytes) => decode(key, bytes),
        None => Ok(Dating::original(campaign)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserId;
    use crate::code::CouponCode;
    use crate::coupon::CouponState;
    use crate::expiry::YearMonth;
    use crate::ops::campaigns::create;
    use crate::ops::claim::{ClaimRequest, claim};
    use crate::ops::coupons::{Order, get};
    use crate::ops::expire::{ExpirationRequest, sweep};
    use crate::ops::ledger::Actor;
    use crate::ops::redeem::{RedemptionRequest, cancel, redeem};
    use crate::ops::testing::{campaign, ts};
    use crate::store::memory::MemoryStore;
    use futures::executor::block_on;

    fn id() -> CampaignId {
        CampaignId::parse("c").expect("id")
    }

    /// Campaign "c" (coupons expire at the end of their claim month) with one
    /// coupon, claimed by alice on 2028-02-10; returns its code.
    fn setup() -> (MemoryStore, String) {
        let store = MemoryStore::default();
        block_on(create(
            &store,
            campaign("c"),
            crate::ops::testing::setup_time(),
        ))
        .expect("campaign");
        let code = block_on(claim(
            &store,
            &UserId("alice".into()),
            "k",
            ClaimRequest { campaign_id: id() },
            ts("2028-02-10T10:00:00+08:00"),
            CouponCode::from_random([3; crate::code::RANDOM_BYTES]),
        ))
        .expect("claim")
        .coupon
        .code;
        (store, code)
    }

    fn end_of(month: &str) -> ExpiryRule {
        ExpiryRule::EndOfMonth {
            month: YearMonth::parse(month).expect("month"),
        }
    }

    fn to(month: &str, revive_expired: bool) -> RedatingRequest {
        RedatingRequest {
            expiry: end_of(month),
            revive_expired,
            changed_by: "ops-lead".into(),
            reason: Some("  the festival runs a month longer ".into()),
        }
    }

    fn seen(store: &MemoryStore, code: &str, now: &str) -> (CouponState, String) {
        let view =
            block_on(get(store, Some(&UserId("alice".into())), code, ts(now))).expect("coupon");
        (view.state, view.expires_at)
    }

    fn sweep_at(store: &MemoryStore, now: &str) -> u64 {
        block_on(sweep(store, ExpirationRequest::default(), ts(now), || {
            false
        }))
        .expect("sweep")
        .expired
    }

    fn redemption(code: &str, order: &str) -> RedemptionRequest {
        RedemptionRequest {
            code: code.into(),
            order: Order {
                id: Some(order.into()),
                amount: crate::money::Amount::new(3_000).expect("amount"),
                currency: crate::money::Currency::parse("CNY").expect("currency"),
                categories: vec![],
                lines: vec![],
            },
            user_id: None,
        }
    }

    #[test]
    fn coupons_end_early_at_an_instant_only_once_claims_are_closed() {
        let (store, code) = setup();
        let at = |instant: &str| RedatingRequest {
            expiry: ExpiryRule::At { at: ts(instant) },
            revive_expired: false,
            changed_by: "ops-lead".into(),
            reason: Some("wrong discount".into()),
        };
        let now = ts("2028-02-11T10:00:00+08:00");
        // While claims are open, an instant inside the window is refused:
        // new coupons would be born expired.
        let refused = block_on(redate(&store, &id(), at("2028-02-12T00:00:00+08:00"), now));
        assert_eq!(refused.unwrap_err().field(), Some("expiry.at"));
        block_on(crate::ops::campaigns::close(
            &store,
            &id(),
            Default::default(),
            now,
        ))
        .expect("close");
        block_on(redate(&store, &id(), at("2028-02-12T00:00:00+08:00"), now)).expect("re-dated");
        let end = "2028-02-12T00:00:00+08:00";
        assert_eq!(
            seen(&store, &code, "2028-02-11T23:59:59.999+08:00"),
            (CouponState::Issued, end.into())
        );
        assert_eq!(seen(&store, &code, end), (CouponState::Expired, end.into()));
        assert_eq!(sweep_at(&store, "2028-02-11T23:00:00+08:00"), 0);
        assert_eq!(sweep_at(&store, "2028-02-12T00:00:01+08:00"), 1);
        // An instant already past means now.
        let later = ts("2028-02-13T08:00:00+08:00");
        block_on(redate(
            &store,
            &id(),
            at("2028-02-01T00:00:00+08:00"),
            later,
        ))
        .expect("past");
        let history = block_on(history(&store, &id())).expect("history");
        assert_eq!(history.changes[1].to, ExpiryRule::At { at: later });
    }

    #[test]
    fn an_outstanding_coupon_follows_a_new_rule_at_once_and_the_change_is_recorded() {
        let (store, code) = setup();
        let march = "2028-03-10T00:00:00+08:00";
        assert_eq!(
            seen(&store, &code, march),
            (CouponState::Expired, "2028-03-01T00:00:00+08:00".into())
        );
        let now = ts("2028-03-05T09:30:00+08:00");
        let view = block_on(redate(&store, &id(), to("2028-03", false), now)).expect("redate");
        assert_eq!(view.expiry_revision, 1);
        assert_eq!(view.campaign["expiry"]["month"], "2028-03");
        // Not swept yet: it follows the new rule and is usable again.
        assert_eq!(
            seen(&store, &code, march),
            (CouponState::Issued, "2028-04-01T00:00:00+08:00".into())
        );
        let history = block_on(history(&store, &id())).expect("history");
        assert_eq!(
            history.changes,
            vec![Change {
                revision: 1,
                changed_by: "ops-lead".into(),
                changed_at: now,
                from: ExpiryRule::EndOfClaimMonth,
                to: end_of("2028-03"),
                revive_expired: false,
                reason: Some("the festival runs a month longer".into()),
            }]
        );
    }

    #[test]
    fn a_swept_coupon_stays_expired_unless_the_change_revives_it() {
        let (store, code) = setup();
        assert_eq!(sweep_at(&store, "2028-03-02T00:00:00+08:00"), 1);
        let after = "2028-03-10T00:00:00+08:00";
        block_on(redate(&store, &id(), to("2028-03", false), ts(after))).expect("redate");
        assert_eq!(
            seen(&store, &code, after),
            (CouponState::Expired, "2028-03-01T00:00:00+08:00".into())
        );
        let stats = block_on(crate::ops::campaigns::get(&store, &id())).expect("campaign");
        assert_eq!(stats.stats.expired, 1);

        let view = block_on(redate(&store, &id(), to("2028-03", true), ts(after))).expect("revive");
        assert_eq!((view.expiry_revision, view.stats.expired), (2, 0));
        assert_eq!(
            seen(&store, &code, after),
            (CouponState::Issued, "2028-04-01T00:00:00+08:00".into())
        );
        // Revived, it redeems once, and a cancellation frees it again.
        let alice = UserId("alice".into());
        block_on(redeem(&store, &alice, redemption(&code, "o1"), ts(after))).expect("redeem");
        assert_eq!(seen(&store, &code, after).0, CouponState::Redeemed);
        let freed =
            block_on(cancel(&store, &code, "o1", Actor::Operator, ts(after))).expect("cancel");
        assert_eq!(freed.state, CouponState::Issued);
        block_on(redeem(&store, &alice, redemption(&code, "o2"), ts(after))).expect("again");
        // The sweep does not touch it before the new expiry, nor take it after.
        assert_eq!(sweep_at(&store, "2028-04-02T00:00:00+08:00"), 0);
        let stats = block_on(crate::ops::campaigns::get(&store, &id())).expect("campaign");
        assert_eq!((stats.stats.redeemed, stats.stats.expired), (1, 0));
    }

    #[test]
    fn a_revived_coupon_left_unused_expires_again_under_the_new_rule() {
        let (store, code) = setup();
        assert_eq!(sweep_at(&store, "2028-03-02T00:00:00+08:00"), 1);
        block_on(redate(
            &store,
            &id(),
            to("2028-03", true),
            ts("2028-03-10T00:00:00+08:00"),
        ))
        .expect("revive");
        assert_eq!(sweep_at(&store, "2028-04-01T00:00:00+08:00"), 1);
        assert_eq!(
            seen(&store, &code, "2028-04-02T00:00:00+08:00"),
            (CouponState::Expired, "2028-04-01T00:00:00+08:00".into())
        );
        let stats = block_on(crate::ops::campaigns::get(&store, &id())).expect("campaign");
        assert_eq!(stats.stats.expired, 1);
    }

    #[test]
    fn bad_changes_are_refused_and_change_nothing() {
        let (store, _) = setup();
        let now = ts("2028-03-05T09:30:00+08:00");
        let nobody = RedatingRequest {
            changed_by: " ".into(),
            ..to("2028-03", false)
        };
        let refused = block_on(redate(&store, &id(), nobody, now));
        assert_eq!(refused.unwrap_err().field(), Some("changed_by"));
        // A fixed month that ends before the claim window does.
        let refused = block_on(redate(&store, &id(), to("2028-01", false), now));
        assert_eq!(refused.unwrap_err().field(), Some("expiry"));
        let missing = CampaignId::parse("nope").expect("id");
        let refused = block_on(redate(&store, &missing, to("2028-03", false), now));
        assert_eq!(refused.unwrap_err(), Error::CampaignNotFound);
        assert!(
            block_on(history(&store, &id()))
                .expect("history")
                .changes
                .is_empty()
        );
    }

    #[test]
    fn a_revival_voids_by_revision_whatever_the_clocks_said() {
        let dating = Dating {
            revision: 2,
            expiry: ExpiryRule::EndOfClaimMonth,
            revived_at: Some(ts("2028-03-05T00:00:00+08:00")),
            revived_revision: Some(2),
            epoch: 1,
        };
        // Decided under revision 1 by a host whose clock ran ahead of the reviver's.
        let late = Ending::Expired {
            at: ts("2028-03-01T00:00:00+08:00"),
            swept_at: Some(ts("2028-03-05T00:00:09+08:00")),
            revision: Some(1),
        };
        assert!(dating.voids(&late));
        // Decided under the revival's own rule: it stands.
        let current = Ending::Expired {
            at: ts("2028-03-01T00:00:00+08:00"),
            swept_at: Some(ts("2028-03-05T00:00:09+08:00")),
            revision: Some(2),
        };
        assert!(!dating.voids(&current));
    }
}
