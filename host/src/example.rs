//! The ready-to-paste walk through the coupon API that `up` prints: create a
//! campaign, claim, validate, redeem. Printed only when the app has the
//! coupon app's variables, and only when `--generate-secrets` made both up: an
//! operator's own admin token or signing secret is never printed nor used.

use coupon_core::Timestamp;
use coupon_core::auth::sign_user_token;
use std::collections::BTreeMap;

/// The example for the app at `url` with the secrets this run `made_up`, or
/// `None` unless it made up both the admin token and the signing secret.
pub fn text(url: &str, made_up: &BTreeMap<String, String>) -> Option<String> {
    let admin = made_up.get("admin_token")?;
    let secret = made_up.get("user_token_secret")?;
    let now = Timestamp::now();
    let week = 7 * 24 * 3600;
    let token = sign_user_token(
        secret.as_bytes(),
        &serde_json::json!({"sub": "alice", "exp": now.as_second() + week}),
    );
    let id = format!("demo-{}", now.as_second());
    let starts = Timestamp::from_second(now.as_second() - 3600).ok()?;
    let ends = Timestamp::from_second(now.as_second() + 30 * 24 * 3600).ok()?;
    Some(format!(
        r#"
Try it (alice's token is valid for a week):

  URL={url} ADMIN='{admin}'
  TOKEN='{token}'
  curl -s -X POST $URL/campaigns -H "authorization: Bearer $ADMIN" -d '{{"id":"{id}","name":"Spring festival","currency":"CNY","discount":{{"kind":"fixed","amount":500}},"min_order_amount":2000,"stock":1000,"per_user_limit":2,"redeemable_by_users":true,"claim_starts_at":"{starts}","claim_ends_at":"{ends}","time_zone":"Asia/Shanghai","expiry":{{"kind":"end_of_claim_month"}}}}'; echo
  CODE=$(curl -s -X POST $URL/claims -H "authorization: Bearer $TOKEN" -H 'idempotency-key: demo-1' -d '{{"campaign_id":"{id}"}}' | sed -E 's/.*"code":"([^"]+)".*/\1/'); echo $CODE
  curl -s -X POST $URL/validations -H "authorization: Bearer $TOKEN" -d '{{"code":"'$CODE'","order":{{"amount":8800,"currency":"CNY"}}}}'; echo
  curl -s -X POST $URL/redemptions -H "authorization: Bearer $TOKEN" -d '{{"code":"'$CODE'","order":{{"id":"order-1","amount":8800,"currency":"CNY"}}}}'; echo
  curl -s $URL/campaigns/{id} -H "authorization: Bearer $ADMIN"; echo

The operator's console: {url}/console/ (paste the admin token above).
"#
    ))
}
