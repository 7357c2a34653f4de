"""The operator's console in headless Chromium, against `coupon-host up`.

Enters the token, creates a campaign through the form (after a field error
shown at its field), runs a claim storm in the background, and checks that
the page's numbers move and match the API, that the pause button stops
claims (the storm gets 503 `campaign_paused`) and resume restarts them, that
a freeze stops redemptions (503 `redemptions_frozen`) until the unfreeze,
that a re-dating shows in the history and that a close is final. Fails on
the first broken promise.
Reads BASE, HOST_LOG, SHOTS and the SPIN_VARIABLE_* secrets from the
environment (see tests/browser/run).
"""

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse
import uuid

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["BASE"]
ADMIN = os.environ["SPIN_VARIABLE_ADMIN_TOKEN"]
SECRET = os.environ["SPIN_VARIABLE_USER_TOKEN_SECRET"].encode()
CHECKOUT = os.environ["SPIN_VARIABLE_CHECKOUT_TOKEN"]
SHOTS = os.environ["SHOTS"]
CAMPAIGN = "browser-sale"
STATS = ["claimed", "redeemed", "expired", "remaining", "remaining_stock",
         "capacity", "binding_limit", "budget_used", "discount_given", "discount_unsettled"]


def user_token(sub):
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 3600}).encode())
    sig = b64(hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def connection():
    url = urllib.parse.urlsplit(BASE)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=10)


def call(conn, method, path, token, body=None, headers=None):
    sent = {"authorization": f"Bearer {token}", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body)
        sent["content-type"] = "application/json"
    conn.request(method, path, body=data, headers=sent)
    response = conn.getresponse()
    raw = response.read()
    return response.status, (json.loads(raw) if raw else None)


def api(method, path, body=None):
    conn = connection()
    try:
        return call(conn, method, path, ADMIN, body)
    finally:
        conn.close()


class Storm(threading.Thread):
    """Claims as fast as one connection allows, recording when each was sent."""

    def __init__(self, users):
        super().__init__(daemon=True)
        self.users = users
        self.stop = threading.Event()
        self.answers = []  # (sent at, status, error code)
        self.failure = None

    def run(self):
        conn = connection()
        try:
            while not self.stop.is_set():
                token = random.choice(self.users)
                sent = time.monotonic()
                status, body = call(conn, "POST", "/claims", token,
                                    {"campaign_id": CAMPAIGN},
                                    {"idempotency-key": str(uuid.uuid4())})
                code = (body or {}).get("error", {}).get("code") if status >= 400 else None
                self.answers.append((sent, status, code))
        except Exception as e:  # reported by the main thread
            self.failure = e
        finally:
            conn.close()

    def since(self, instant):
        return [(s, c) for (t, s, c) in self.answers if t >= instant]


def fail(message):
    print(f"browser: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def main():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1400,1100"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    storms = []
    try:
        run(driver, storms)
    except SystemExit:
        driver.save_screenshot(f"{SHOTS}/failure.png")
        raise
    finally:
        for storm in storms:
            storm.stop.set()
        driver.quit()


def run(driver, storms):
    wait = WebDriverWait(driver, 15, poll_frequency=0.1)
    el = lambda id: driver.find_element(By.ID, id)
    text = lambda id: el(id).text.strip()

    def number(id):
        raw = text(id).replace(",", "")
        return int(raw) if raw.lstrip("-").isdigit() else raw

    def shot(name):
        driver.save_screenshot(f"{SHOTS}/{name}.png")

    # The token: a wrong one is refused, the right one opens the console and
    # stays in session storage, never in the URL.
    driver.get(f"{BASE}/console/")
    el("token").send_keys("not-the-token")
    el("login-form").submit()
    wait.until(lambda d: "not accepted" in text("login-error"))
    el("token").send_keys(ADMIN)
    el("login-form").submit()
    wait.until(lambda d: el("app").is_displayed())
    check(ADMIN not in driver.current_url, "the token is in the URL")
    check(driver.execute_script("return sessionStorage.getItem('coupon-console-admin-token')") == ADMIN,
          "the token is not in session storage")
    check(driver.execute_script("return localStorage.length") == 0, "something is in local storage")

    # A field error shows at its field; nothing is created.
    el("new").click()
    form = el("create-form")
    field = lambda name: form.find_element(By.NAME, name)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    ends = now + datetime.timedelta(days=7)
    for name, value in [("id", CAMPAIGN), ("name", "Browser sale"), ("discount.amount", "500"),
                        ("min_order_amount", "2000"), ("stock", "0"), ("per_user_limit", "50")]:
        field(name).clear()
        field(name).send_keys(value)
    field("claim_starts_at").clear()
    field("claim_starts_at").send_keys(now.isoformat().replace("+00:00", "Z"))
    field("claim_ends_at").clear()
    field("claim_ends_at").send_keys(ends.isoformat().replace("+00:00", "Z"))
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    stock_error = form.find_element(By.CSS_SELECTOR, '.error[data-field="stock"]')
    wait.until(lambda d: stock_error.text.strip())
    check(field("stock").get_attribute("aria-invalid") == "true", "the stock field is not marked")
    status, _ = api("GET", f"/campaigns/{CAMPAIGN}")
    check(status == 404, f"a refused form created the campaign ({status})")
    shot("form-error")

    field("stock").clear()
    field("stock").send_keys("100000")
    field("coupons_per_order").clear()
    field("coupons_per_order").send_keys("2")
    field("hold_seconds").send_keys("900")
    field("retention_days").send_keys("30")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: el("detail").is_displayed() and CAMPAIGN in text("title"))
    check(stock_error.text.strip() == "", "the fixed field still shows its error")
    status, created = api("GET", f"/campaigns/{CAMPAIGN}")
    check(status == 200 and created["stock"] == 100000, f"not created: {status} {created}")
    check(created["coupons_per_order"] == 2 and created["redeemable_by_users"] is False
          and created.get("hold_seconds") == 900 and created["retention_days"] == 30,
          f"the form's order settings did not arrive: {created}")
    wait.until(lambda d: text("retention") == "30")
    wait.until(lambda d: any(CAMPAIGN in b.text for b in d.find_elements(By.CSS_SELECTOR, "#campaigns button")))

    # The storm: the page's numbers move with it and stay between two API reads.
    users = [user_token(f"shopper-{i}") for i in range(200)]
    storms.extend(Storm(users) for _ in range(3))
    for storm in storms:
        storm.start()
    first = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        claimed = number("n-claimed")
        if isinstance(claimed, int) and claimed > 0:
            first = first if first is not None else claimed
            if claimed > first:
                break
        time.sleep(0.2)
    else:
        fail(f"the page's claimed count did not move ({first})")
    wait.until(lambda d: text("r-claimed") not in ("–", "0"))
    for _ in range(3):
        _, before = api("GET", f"/campaigns/{CAMPAIGN}")
        time.sleep(1.5)  # the page reads every second
        on_page = number("n-claimed")
        _, after = api("GET", f"/campaigns/{CAMPAIGN}")
        check(before["stats"]["claimed"] <= on_page <= after["stats"]["claimed"],
              f"the page says {on_page} claimed, the API {before['stats']['claimed']} then {after['stats']['claimed']}")
    check(any(s == 201 for storm in storms for (_, s, _) in storm.answers), "the storm got no coupon")
    shot("live")

    # Pause: confirmed in a dialog naming the campaign; once the answer shows,
    # every claim sent gets 503 campaign_paused. Who and why go on record.
    note = el("note")
    note.find_element(By.NAME, "changed_by").send_keys("browser-test")
    note.find_element(By.NAME, "reason").send_keys("bots in the storm")
    el("pause").click()
    wait.until(lambda d: el("confirm").is_displayed())
    check(CAMPAIGN in text("confirm-text"), f"the confirmation does not name the campaign: {text('confirm-text')}")
    el("confirm-yes").click()
    wait.until(lambda d: "paused" in text("action-result") and text("state") == "paused")
    paused_at = time.monotonic()
    time.sleep(2)
    after_pause = [a for storm in storms for a in storm.since(paused_at)]
    check(after_pause, "the storm sent nothing after the pause")
    issued = [a for a in after_pause if a[0] == 201]
    check(not issued, f"{len(issued)} coupons issued after the console said paused")
    check(all(a == (503, "campaign_paused") for a in after_pause),
          f"claims after the pause answered {sorted(set(after_pause))}")

    # Paused, the numbers stand still: the page must show exactly the API's.
    time.sleep(1.5)
    status, view = api("GET", f"/campaigns/{CAMPAIGN}")
    check(status == 200 and view["paused"], f"the API does not say paused: {view}")
    for name in STATS:
        on_page = number(f"n-{name}")
        check(on_page == view["stats"][name], f"{name}: the page says {on_page}, the API {view['stats'][name]}")
    # The brake's audit shows the pause with who and why, as the API has it.
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#brakes tbody tr")) == 1)
    cells = [c.text for c in el("brakes").find_elements(By.CSS_SELECTOR, "tbody td")]
    check(cells[1:] == ["pause", "browser-test", "bots in the storm"], f"the brake history row: {cells}")
    status, audit = api("GET", f"/campaigns/{CAMPAIGN}/brakes")
    check(status == 200 and audit["transitions"][0]["reason"] == "bots in the storm",
          f"the API's brake history: {status} {audit}")
    shot("paused")

    # Resume: claims are issued again.
    el("resume").click()
    wait.until(lambda d: el("confirm").is_displayed())
    el("confirm-yes").click()
    wait.until(lambda d: text("state") == "claims open")
    resumed_at = time.monotonic()
    time.sleep(2)
    check(any(s == 201 for storm in storms for (s, _) in storm.since(resumed_at)),
          "no claim was issued after resume")
    for storm in storms:
        storm.stop.set()
    for storm in storms:
        storm.join(15)
        check(storm.failure is None, f"the storm failed: {storm.failure!r}")

    # A sweep step shows its counts.
    el("sweep").click()
    wait.until(lambda d: "Sweep step: examined" in text("action-result"))

    # A re-dating: old and new rule side by side, then in the history.
    month = (ends.replace(day=1) + datetime.timedelta(days=40)).strftime("%Y-%m")
    redate = el("redate-form")
    redate.find_element(By.CSS_SELECTOR, "option[value=end_of_month]").click()
    redate.find_element(By.NAME, "month").send_keys(month)
    redate.find_element(By.NAME, "changed_by").send_keys("browser-test")
    check(text("redate-from") == "end of the claim month" and text("redate-to") == f"end of {month}",
          f"side by side: {text('redate-from')} / {text('redate-to')}")
    redate.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: el("confirm").is_displayed())
    el("confirm-yes").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history tbody tr")) == 1)
    row = el("history").find_elements(By.CSS_SELECTOR, "tbody td")
    check(row[2].text == "browser-test" and row[4].text == f"end of {month}",
          f"the history row: {[c.text for c in row]}")
    check(text("rule") == f"end of {month}", f"the rule in force shows {text('rule')}")
    shot("redated")

    # Customer support: a coupon looked up by its code shows what its holder
    # sees, the new expiry included.
    conn = connection()
    try:
        status, claimed = call(conn, "POST", "/claims", user_token("support-case"),
                               {"campaign_id": CAMPAIGN}, {"idempotency-key": str(uuid.uuid4())})
        check(status == 201, f"a claim for the lookup answered {status} {claimed}")
        status, held = call(conn, "GET", f"/coupons/{claimed['code']}", user_token("support-case"))
        check(status == 200, f"the holder's read answered {status}")
    finally:
        conn.close()
    lookup = el("lookup-form")
    lookup.find_element(By.NAME, "code").send_keys(claimed["code"].lower())
    lookup.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: el("lookup").is_displayed())
    shown = {dd.get_attribute("data-field"): dd.text
             for dd in el("lookup").find_elements(By.TAG_NAME, "dd")}
    for field, key in [("code", "code"), ("holder", "user_id"), ("state", "state"), ("expires", "expires_at")]:
        check(shown.get(field) == held[key], f"lookup {field}: the page says {shown.get(field)}, the API {held[key]}")
    lookup.find_element(By.NAME, "code").clear()
    lookup.find_element(By.NAME, "code").send_keys("AAAAAAAAAAAAAAAAAAAAAA")
    lookup.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: text("lookup-error") == "No coupon has that code.")
    check(not el("lookup").is_displayed(), "a miss still shows the last coupon")

    # Freeze: redemptions answer 503 redemptions_frozen once the page says
    # frozen, and redeem again after the unfreeze; claims go on meanwhile.
    def redeem(order_id):
        conn = connection()
        try:
            # The shop's checkout redeems for the user, as campaigns require by default.
            return call(conn, "POST", "/redemptions", CHECKOUT,
                        {"code": claimed["code"], "user_id": "support-case",
                         "order": {"id": order_id, "amount": 5000, "currency": "CNY"}})
        finally:
            conn.close()

    el("freeze").click()
    wait.until(lambda d: el("confirm").is_displayed())
    check(CAMPAIGN in text("confirm-text") and "redemptions" in text("confirm-text"),
          f"the confirmation does not name the campaign: {text('confirm-text')}")
    el("confirm-yes").click()
    wait.until(lambda d: text("redemptions") == "redemptions frozen")
    check(text("state") == "claims open", f"a freeze changed the claims badge: {text('state')}")
    status, body = redeem("browser-order-1")
    check(status == 503 and body["error"]["code"] == "redemptions_frozen",
          f"a redemption while frozen answered {status} {body}")
    status, view = api("GET", f"/campaigns/{CAMPAIGN}")
    check(view["frozen"] and not view["paused"], f"the API does not say frozen: {view}")
    shot("frozen")
    el("unfreeze").click()
    wait.until(lambda d: el("confirm").is_displayed())
    el("confirm-yes").click()
    wait.until(lambda d: text("redemptions") == "redemptions open")
    status, body = redeem("browser-order-1")
    check(status == 201, f"a redemption after the unfreeze answered {status} {body}")

    # Limits: below what is issued is refused at the field; a lowered stock,
    # from the form, stops a storm at the new capacity, as page and API say.
    limits = el("limits-form")
    lfield = lambda name: limits.find_element(By.NAME, name)
    lfield("stock").send_keys("1")
    lfield("changed_by").send_keys("browser-test")
    limits.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: el("confirm").is_displayed())
    el("confirm-yes").click()
    limit_error = limits.find_element(By.CSS_SELECTOR, '.error[data-field="stock"]')
    wait.until(lambda d: "already issued" in limit_error.text)
    status, view = api("GET", f"/campaigns/{CAMPAIGN}")
    check(view["limits_revision"] == 0 and view["stock"] == 100000, f"a refused change changed: {view}")
    shot("limits-refused")
    late = [Storm([user_token(f"late-{i}") for i in range(400)]) for _ in range(2)]
    storms.extend(late)
    for storm in late:
        storm.start()
    time.sleep(1)
    # Room for what the storm issues while the form is filled in: eight
    # seconds at its rate (thousands a second on coupon-host; on `spin up`,
    # which leaves Nagle's algorithm on, a keep-alive connection waits ~40 ms
    # for the client's delayed ACK each request).
    second = time.monotonic() - 1
    rate = sum(len(storm.since(second)) for storm in late)
    target = api("GET", f"/campaigns/{CAMPAIGN}")[1]["stats"]["claimed"] + max(100, 8 * rate)
    lfield("stock").clear()
    lfield("stock").send_keys(str(target))
    lfield("reason").send_keys("supplier short")
    limits.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: el("confirm").is_displayed())
    check(CAMPAIGN in text("confirm-text"), f"the confirmation does not name the campaign: {text('confirm-text')}")
    el("confirm-yes").click()
    # (The refused change's number is skipped.)
    wait.until(lambda d: text("limits-revision") == "2")
    wait_sold_out = WebDriverWait(driver, 30, poll_frequency=0.2)
    wait_sold_out.until(lambda d: all(any(code == "sold_out" for (_, _, code) in storm.answers[-5:])
                                      for storm in late))
    for storm in late:
        storm.stop.set()
    for storm in late:
        storm.join(15)
        check(storm.failure is None, f"the storm failed: {storm.failure!r}")
    status, view = api("GET", f"/campaigns/{CAMPAIGN}")
    stats = view["stats"]
    check(view["stock"] == target and stats["claimed"] == stats["capacity"] == target and stats["remaining"] == 0,
          f"lowered to {target}: {view}")
    time.sleep(1.5)
    check(number("n-capacity") == target and number("n-remaining") == 0,
          f"the page says capacity {text('n-capacity')}, remaining {text('n-remaining')}; the API {target}, 0")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#limits-history tbody tr")) == 1)
    row = [c.text for c in el("limits-history").find_elements(By.CSS_SELECTOR, "tbody td")]
    check(row[2] == "browser-test" and row[5] == str(target) and row[6] == "supplier short",
          f"the limits history row: {row}")
    shot("limits-lowered")

    # Close: final; claims answer 403 campaign_not_active and resume is off.
    el("close").click()
    wait.until(lambda d: el("confirm").is_displayed())
    check("final" in text("confirm-text"), f"the close does not say it is final: {text('confirm-text')}")
    el("confirm-yes").click()
    wait.until(lambda d: text("state").startswith("claims closed"))
    check(not el("resume").is_enabled(), "resume is offered on a closed campaign")
    conn = connection()
    try:
        status, body = call(conn, "POST", "/claims", user_token("late-shopper"),
                            {"campaign_id": CAMPAIGN}, {"idempotency-key": str(uuid.uuid4())})
    finally:
        conn.close()
    check(status == 403 and body["error"]["code"] == "campaign_not_active",
          f"a claim after the close answered {status} {body}")
    shot("closed")

    # The ledger: its first event is the campaign's creation, and the page's
    # reconciliation says what the API's says.
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#events tbody tr")) > 0)
    first = [c.text for c in el("events").find_elements(By.CSS_SELECTOR, "tbody tr:first-child td")]
    check(first[1] == "created", f"the first event: {first}")
    el("reconcile").click()
    # Some 30,000 positions, 4,096 a call.
    WebDriverWait(driver, 60, poll_frequency=0.2).until(
        lambda d: text("ledger-result").startswith("Ledger:"))
    cursor = ""
    while True:
        status, report = api("GET", f"/campaigns/{CAMPAIGN}/reconciliation?cursor={cursor}")
        check(status == 200, f"the reconciliation answered {status} {report}")
        if report["status"] == "done":
            break
        cursor = report["cursor"]
    ledger = report["ledger"]
    expected = f"Ledger: claimed {ledger['claimed']:,}, redeemed {ledger['redeemed']:,},"
    check(text("ledger-result").startswith(expected),
          f"the page says {text('ledger-result')!r}, the API {report}")
    check(ledger["claimed"] == api("GET", f"/campaigns/{CAMPAIGN}")[1]["stats"]["claimed"],
          f"the ledger's claims differ from the stats: {report}")
    driver.execute_script("arguments[0].scrollIntoView()", el("ledger-result"))
    shot("ledger")

    # The token never reached the host's log.
    with open(os.environ["HOST_LOG"]) as log:
        check(ADMIN not in log.read(), "the admin token is in the host's log")
    answers = sum(len(storm.answers) for storm in storms)
    print(f"browser: 1 passed, 0 failed (console in Chromium; {answers} claims in the storm; "
          f"screenshots in {SHOTS}/)")


if __name__ == "__main__":
    main()
