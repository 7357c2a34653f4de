//! The store's key layout, in one place.
//!
//! Records are written once, by the request that owns them; ownership is taken
//! with an atomic increment from 0 to 1 on a counter key beside the record,
//! as a lease (`crate::lease`): attempt n of `{key}` is `{key}:attempt:{n}`
//! (attempt 1 is `{key}` itself), and `{that attempt's key}:seen` records when
//! an unfinished owner was first seen.
//!
//! | key | kind | meaning |
//! |---|---|---|
//! | `campaigns:seq` | counter | campaigns created; slot numbers of `campaigns:{n}` |
//! | `campaigns:{n}` | record | the id of the n-th campaign (for the expiry sweep) |
//! | `c:{id}` | record | the campaign (JSON) |
//! | `c:{id}:owner` | lease | owns writing `c:{id}` (see `lease`: a creator that died is taken over) |
//! | `c:{id}:brake` | counter | pauses and resumes so far, plus 1,000 per close: odd or at least 1,000 is paused, at least 1,000 is closed for good (below 10^6: read with `get` in a batch) |
//! | `c:{id}:closes` | counter | closes of the claim window so far; numbers of `c:{id}:closes:{k}` |
//! | `c:{id}:closes:{k}` | record | the k-th close: when, who, why (written before it counts) |
//! | `c:{id}:brake:{shard}:{level}` | lease | owns moving the shard's brake to `level` (see `lease`) |
//! | `c:{id}:pauses:{n}` | record | the n-th transition of the claims brake (odd: a pause): when, who, why |
//! | `c:{id}:freezes:{n}` | record | the n-th transition of the redemptions brake (odd: a freeze): when, who, why |
//! | `c:{id}:freeze` | counter | freezes and unfreezes of redemptions so far: odd is frozen (below 10^6: read with `get` in a batch) |
//! | `c:{id}:freeze:{shard}:{level}` | lease | owns moving the shard's redemption ledger to brake `level` |
//! | `c:{id}:claimed:{shard}` | counter | coupons taken from the shard's stock, plus 2^40 per brake level: braked while the level is odd |
//! | `c:{id}:withheld:{shard}` | counter | units the operator's limit changes took out of the shard's stock (negative: added); `c:{id}:claimed:{shard}` holds them too (see `ops::limits`) |
//! | `c:{id}:limits` | register | stock, budget and claim rate in force, if changed: revision and values (JSON) |
//! | `c:{id}:limits:{n}` | record | the n-th change of limits: who, when, why, old and new values |
//! | `c:{id}:limits:lock` | lease | attempt n owns making change n: one change at a time |
//! | `c:{id}:limits:done` | register | the latest change finished: the next one takes attempt `done + 1` |
//! | `c:{id}:recount` | counter | stock recounts so far, times two: odd while one fences the stock (below 10^6: read with `get` in a batch; see `ops::recount`) |
//! | `c:{id}:recount:{r}` | lease | owns moving the recount counter to `r` |
//! | `c:{id}:recount:{r}:since` | register | when the recount counter was first seen at `r` (Unix ms) |
//! | `c:{id}:recount:{r}:shard:{shard}` | lease | owns giving back the shard's lost units in fence `r` |
//! | `c:{id}:recount:{r}:shard:{shard}:counted` | register | `{month} {coupons}`: fence `r`'s count of the shard, done up to (not including) that claim month |
//! | `c:{id}:recount:{r}:full` | register | present if fence `r` found every shard's coupons at its capacity: no unit can be taken again |
//! | `c:{id}:recount:{r}:done` | register | when fence `r` was first seen counted and given back (Unix ms): it comes down a lease later, once no sweep that counted can still act |
//! | `c:{id}:soldout` | register | the Unix second a claim last found every shard empty: claims in that second are refused at once |
//! | `c:{id}:redemptions:{shard}` | ledger | redemptions, split by a hash of the code so redemptions share no hot key (see `ops::ledger`: `{ledger}` counts positions, plus 2^40 per freeze level: frozen while the level is odd; `{ledger}:{p}` is the entry `{code} {generation} {amount} {ms} {by} {order}`, or `-` from a redemption that met the freeze, `{ledger}:settled` the prefix settled) |
//! | `c:{id}:cancels:{shard}` | ledger | cancelled redemptions, split the same way |
//! | `c:{id}:holds:{shard}` | ledger | holds, split the same way (the entry is written with the hold's turn) |
//! | `c:{id}:releases:{shard}` | ledger | holds released, split the same way (written with the turn's `void`) |
//! | `c:{id}:created` | record | when the campaign was created (Unix ms): its first event |
//! | `c:{id}:purge` | counter | purge calls that sealed the campaign: from the first, no re-dating (see `ops::purge`) |
//! | `c:{id}:purge:since` | register | when the seal was first seen (Unix ms): keys are deleted from a lease later |
//! | `c:{id}:purged` | record | the purged campaign's settings, dating and who purged it: what the purge walks, and what stays |
//! | `c:{id}:expirations:{epoch}` | ledger | generations recorded `expired` since the `epoch`-th revival (see `c:{id}:expiry`) |
//! | `c:{id}:expiry` | register | the expiry rule in force, if re-dated: revision, rule, revivals (JSON) |
//! | `c:{id}:expiry:seq` | counter | re-datings so far; revision numbers of `c:{id}:expiry:{n}` |
//! | `c:{id}:expiry:{n}` | record | the n-th re-dating: who, when, old and new rule |
//! | `c:{id}:positions:{user}` | counter | positions this user's claims took, each the next: one per coupon, plus any a failed claim left vacant (below 10^6: read with `get` in a batch) |
//! | `c:{id}:positions:{user}:{q}` | record | what position q (1 to the per-user limit) holds: the coupon's code, or `vacant:{n}` once its n-th owner gave it up |
//! | `c:{id}:positions:{user}:{q}:owner` | lease | owns position q: attempt 1 is the claim that took it; a claim adopts a vacant or lapsed one as attempt 2 on |
//! | `c:{id}:rate:{second}:{shard}` | counter | claims attempted in that Unix second on that rate shard (admission control); deleted a minute later by a later second's first claim, or by the purge |
//! | `c:{id}:rate:m:{minute}` | counter | seconds of that Unix minute that had rate counters: where the purge looks for them |
//! | `c:{id}:rate:h:{hour}` | counter | minutes of that Unix hour that were marked: where the purge looks for those |
//! | `c:{id}:m:{month}:seq:{shard}` | counter | coupons issued from the shard in that claim month (campaign zone); slot numbers of the next key |
//! | `c:{id}:m:{month}:coupon:{shard}:{n}` | record | code of that month's and shard's n-th coupon: the expiry index the sweep walks |
//! | `c:{id}:m:{month}:count:{shard}` | register | `{slots} {coupons}`: of that month's and shard's first `slots` index slots, how many hold a coupon (written by a recount, when every one of them is final) |
//! | `c:{id}:m:{month}:swept:{revision}` | counter | 1 = the sweep walked that month's coupons to the end under that expiry revision, after the month was over |
//! | `u:{user}:idem:{key}` | lease | owns this idempotency key's first attempt |
//! | `u:{user}:idem:{key}:attempt:{n}` | lease | owns attempt n, after attempt n-1 met the brake, failed or lapsed (see `lease`) |
//! | `{lease}:seen` | register | when a lease was first seen owned and unfinished (Unix ms) |
//! | `u:{user}:idem:{key}:result` | record | what that request answered |
//! | `u:{user}:order:{order}:n` | counter | slots this user's order took: one per redemption that got past the order's first read (below 10^6: read with `get` in a batch) |
//! | `u:{user}:order:{order}:{q}` | record | slot q of the order: the coupon generation, campaign, discount and terms hash it holds, or `void` (see `ops::orders`) |
//! | `u:{user}:coupons:n` | counter | coupons this user was issued, plus claims that failed after numbering theirs: slot numbers of the next key (the wallet, newest first) |
//! | `u:{user}:coupons:{n}` | record | the code of the user's n-th coupon, written with the coupon; a number never written is skipped |
//! | `u:{user}:misses:{minute}` | counter | lookups of coupons this user does not hold in that Unix minute (below 10^6: read with `get` in a batch) |
//! | `k:{code}` | record | the coupon |
//! | `k:{code}:gen` | counter | cancelled redemptions so far: the coupon's generation (below 10^6, so it may be read with `get` in a batch) |
//! | `k:{code}:lock:{g}` | lease | owns generation g's ending: a redemption or the sweep |
//! | `k:{code}:end:{g}` | record | how generation g ended: redeemed by an order, or expired |
//! | `k:{code}:cancel:{g}` | lease | owns cancelling generation g's redemption |
//! | `k:{code}:turns:{g}:n` | counter | turns generation g's holds (and, on a campaign with holds, its redemptions) took (below 10^6: read with `get` in a batch; see `ops::holds`) |
//! | `k:{code}:turns:{g}:{t}` | record | turn t: a hold with its order, terms and end, the order that redeemed the generation, or `void` |
//! | `k:{code}:cancelled:{g}` | record | present once generation g's cancel is counted: written with its ledger entry, before the generation moves on |
//!
//! User ids and idempotency keys are escaped so no input can forge a separator.

use crate::campaign::CampaignId;
use crate::code::CouponCode;
use crate::expiry::YearMonth;
use crate::ops::ledger::Ledger;

/// Keeps `[A-Za-z0-9._-]` and writes every other byte as `%XX`: injective and
/// free of `:`.
pub fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub const CAMPAIGN_SEQ: &str = "campaigns:seq";

pub fn campaign_slot(n: i64) -> String {
    format!("campaigns:{n}")
}

/// Keys of one campaign.
pub struct CampaignKeys(String);

impl CampaignKeys {
    pub fn new(id: &CampaignId) -> Self {
        CampaignKeys(format!("c:{id}"))
    }
    pub fn record(&self) -> String {
        self.0.clone()
    }
    fn sub(&self, name: &str) -> String {
        format!("{}:{name}", self.0)
    }
    pub fn owner(&self) -> String {
        self.sub("owner")
    }
    pub fn brake(&self) -> String {
        self.sub("brake")
    }
    pub fn brake_step(&self, shard: u32, level: i64) -> String {
        self.sub(&format!("brake:{shard}:{level}"))
    }
    pub fn brake_record(&self, transition: i64) -> String {
        self.sub(&format!("pauses:{transition}"))
    }
    pub fn closes(&self) -> String {
        self.sub("closes")
    }
    pub fn close_record(&self, close: i64) -> String {
        self.sub(&format!("closes:{close}"))
    }
    pub fn freeze_record(&self, transition: i64) -> String {
        self.sub(&format!("freezes:{transition}"))
    }
    pub fn freeze(&self) -> String {
        self.sub("freeze")
    }
    pub fn freeze_step(&self, shard: u32, level: i64) -> String {
        self.sub(&format!("freeze:{shard}:{level}"))
    }
    pub fn claimed(&self, shard: u32) -> String {
        self.sub(&format!("claimed:{shard}"))
    }
    pub fn withheld(&self, shard: u32) -> String {
        self.sub(&format!("withheld:{shard}"))
    }
    pub fn limits(&self) -> String {
        self.sub("limits")
    }
    pub fn limits_change(&self, n: i64) -> String {
        self.sub(&format!("limits:{n}"))
    }
    pub fn limits_lock(&self) -> String {
        self.sub("limits:lock")
    }
    pub fn limits_done(&self) -> String {
        self.sub("limits:done")
    }
    pub fn recount(&self) -> String {
        self.sub("recount")
    }
    pub fn recount_step(&self, round: i64) -> String {
        self.sub(&format!("recount:{round}"))
    }
    pub fn recount_since(&self, round: i64) -> String {
        self.sub(&format!("recount:{round}:since"))
    }
    pub fn recount_shard(&self, round: i64, shard: u32) -> String {
        self.sub(&format!("recount:{round}:shard:{shard}"))
    }
    pub fn recount_progress(&self, round: i64, shard: u32) -> String {
        format!("{}:counted", self.recount_shard(round, shard))
    }
    pub fn recount_full(&self, round: i64) -> String {
        self.sub(&format!("recount:{round}:full"))
    }
    pub fn recount_done(&self, round: i64) -> String {
        self.sub(&format!("recount:{round}:done"))
    }
    pub fn month_count(&self, month: YearMonth, shard: u32) -> String {
        self.sub(&format!("m:{month}:count:{shard}"))
    }
    pub fn sold_out(&self) -> String {
        self.sub("soldout")
    }
    pub fn redemptions(&self, shard: u32) -> Ledger {
        Ledger::new(self.sub(&format!("redemptions:{shard}")))
    }
    pub fn cancels(&self, shard: u32) -> Ledger {
        Ledger::new(self.sub(&format!("cancels:{shard}")))
    }
    pub fn created(&self) -> String {
        self.sub("created")
    }
    pub fn purge(&self) -> String {
        self.sub("purge")
    }
    pub fn purge_since(&self) -> String {
        self.sub("purge:since")
    }
    pub fn purged(&self) -> String {
        self.sub("purged")
    }
    pub fn holds(&self, shard: u32) -> Ledger {
        Ledger::new(self.sub(&format!("holds:{shard}")))
    }
    pub fn releases(&self, shard: u32) -> Ledger {
        Ledger::new(self.sub(&format!("releases:{shard}")))
    }
    pub fn expirations(&self, epoch: u32) -> Ledger {
        Ledger::new(self.sub(&format!("expirations:{epoch}")))
    }
    pub fn dating(&self) -> String {
        self.sub("expiry")
    }
    pub fn dating_seq(&self) -> String {
        self.sub("expiry:seq")
    }
    pub fn dating_change(&self, revision: i64) -> String {
        self.sub(&format!("expiry:{revision}"))
    }
    pub fn positions(&self, user: &str) -> String {
        self.sub(&format!("positions:{}", escape(user)))
    }
    pub fn user_slot(&self, user: &str, position: u32) -> String {
        format!("{}:{position}", self.positions(user))
    }
    pub fn user_slot_owner(&self, user: &str, position: u32) -> String {
        format!("{}:owner", self.user_slot(user, position))
    }
    pub fn rate(&self, unix_second: i64, shard: u32) -> String {
        self.sub(&format!("rate:{unix_second}:{shard}"))
    }
    pub fn rate_minute(&self, unix_minute: i64) -> String {
        self.sub(&format!("rate:m:{unix_minute}"))
    }
    pub fn rate_hour(&self, unix_hour: i64) -> String {
        self.sub(&format!("rate:h:{unix_hour}"))
    }
    pub fn month_seq(&self, month: YearMonth, shard: u32) -> String {
        self.sub(&format!("m:{month}:seq:{shard}"))
    }
    pub fn month_slot(&self, month: YearMonth, shard: u32, n: i64) -> String {
        self.sub(&format!("m:{month}:coupon:{shard}:{n}"))
    }
    pub fn month_swept(&self, month: YearMonth, revision: i64) -> String {
        self.sub(&format!("m:{month}:swept:{revision}"))
    }
}

/// The counter that owns a user's idempotency key, and the record of its answer.
pub fn idempotency(user: &str, key: &str) -> (String, String) {
    let owner = format!("u:{}:idem:{}", escape(user), escape(key));
    let result = format!("{owner}:result");
    (owner, result)
}

/// The counter of a user's failed coupon lookups in one Unix minute.
pub fn misses(user: &str, unix_minute: i64) -> String {
    format!("u:{}:misses:{unix_minute}", escape(user))
}

/// The counter numbering a user's coupons (the wallet's newest slot).
pub fn wallet(user: &str) -> String {
    format!("u:{}:coupons:n", escape(user))
}

/// The code of a user's n-th coupon.
pub fn wallet_slot(user: &str, n: i64) -> String {
    format!("u:{}:coupons:{n}", escape(user))
}

/// Keys of one coupon.
pub struct CouponKeys(String);

impl CouponKeys {
    pub fn new(code: &CouponCode) -> Self {
        CouponKeys(format!("k:{code}"))
    }
    pub fn record(&self) -> String {
        self.0.clone()
    }
    pub fn generation(&self) -> String {
        format!("{}:gen", self.0)
    }
    pub fn lock(&self, generation: i64) -> String {
        format!("{}:lock:{generation}", self.0)
    }
    pub fn end(&self, generation: i64) -> String {
        format!("{}:end:{generation}", self.0)
    }
    pub fn cancel(&self, generation: i64) -> String {
        format!("{}:cancel:{generation}", self.0)
    }
    pub fn cancelled(&self, generation: i64) -> String {
        format!("{}:cancelled:{generation}", self.0)
    }
    pub fn turns(&self, generation: i64) -> String {
        format!("{}:turns:{generation}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_injective_and_separator_free() {
        let inputs = ["alice", "a:b", "a%3Ab", "a b", "☃", "", "a/b"];
        let escaped: Vec<String> = inputs.iter().map(|s| escape(s)).collect();
        for (i, a) in escaped.iter().enumerate() {
            assert!(!a.contains(':'), "{a}");
            for b in &escaped[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(escape("alice-1.x_y"), "alice-1.x_y");
    }
}
