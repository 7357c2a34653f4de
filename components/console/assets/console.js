// The operator's console: every number on the page is read from the
// campaigns API, every button calls it. No framework, no outside fetch.
'use strict';

const TOKEN_KEY = 'coupon-console-admin-token';
const WINDOW_SECONDS = 300; // the chart's span
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
let selected = null; // the campaign id on show
let samples = []; // {t (ms), claimed, redeemed}, oldest first
let poller = null;
let nextCursor = null;

async function api(method, path, body) {
  const init = { method, headers: { authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    return { status: 0, ok: false, data: null, error: `network: ${e.message}` };
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  return { status: response.status, ok: response.ok, data };
}

function problem(answer) {
  if (answer.error) return answer.error;
  const e = answer.data && answer.data.error;
  return e ? `${answer.status} ${e.code}: ${e.message}` : `HTTP ${answer.status}`;
}

function ruleText(rule) {
  if (!rule) return '';
  if (rule.kind === 'at') return `at ${rule.at}`;
  return rule.kind === 'end_of_month' ? `end of ${rule.month}` : 'end of the claim month';
}

function number(n) {
  return typeof n === 'number' ? n.toLocaleString('en') : String(n);
}

// --- the token ---

async function openWith(candidate) {
  token = candidate;
  const answer = await api('GET', '/campaigns?limit=1');
  if (!answer.ok) {
    $('login-error').textContent = answer.status === 401 ? 'That token is not accepted.' : problem(answer);
    token = null;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  $('login').hidden = true;
  $('app').hidden = false;
  $('forget').hidden = false;
  await loadCampaigns(true);
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const field = $('token');
  const candidate = field.value.trim();
  field.value = '';
  if (candidate) openWith(candidate);
});

$('forget').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

// --- the list ---

async function loadCampaigns(fromStart) {
  if (fromStart) {
    $('campaigns').replaceChildren();
    nextCursor = null;
  }
  const query = nextCursor ? `?limit=50&after=${encodeURIComponent(nextCursor)}` : '?limit=50';
  const answer = await api('GET', `/campaigns${query}`);
  if (!answer.ok) {
    $('action-result').textContent = problem(answer);
    return;
  }
  for (const campaign of answer.data.campaigns) {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.id = campaign.id;
    const flags = [campaign.closed ? 'closed' : campaign.paused && 'paused', campaign.frozen && 'frozen'].filter(Boolean);
    button.textContent = `${campaign.id}: ${campaign.name}${flags.length ? ` (${flags.join(', ')})` : ''}`;
    button.addEventListener('click', () => select(campaign.id));
    item.append(button);
    $('campaigns').append(item);
  }
  nextCursor = answer.data.next || null;
  $('more').hidden = !nextCursor;
}

$('more').addEventListener('click', () => loadCampaigns(false));

// --- one campaign, live ---

function select(id) {
  selected = id;
  samples = [];
  for (const b of document.querySelectorAll('#campaigns button')) {
    b.setAttribute('aria-current', String(b.dataset.id === id));
  }
  $('create').hidden = true;
  $('detail').hidden = false;
  $('action-result').textContent = '';
  $('cancel-result').textContent = '';
  clearInterval(poller);
  refresh();
  loadHistory();
  poller = setInterval(refresh, 1000);
}

async function refresh() {
  const id = selected;
  if (!id) return;
  const answer = await api('GET', `/campaigns/${encodeURIComponent(id)}`);
  if (id !== selected) return;
  if (!answer.ok) {
    $('action-result').textContent = problem(answer);
    return;
  }
  show(answer.data);
}

function show(campaign) {
  $('title').textContent = `${campaign.name} (${campaign.id})`;
  const state = $('state');
  state.textContent = campaign.closed ? `claims closed ${campaign.closed_at || ''}`.trim()
    : campaign.paused ? 'paused' : 'claims open';
  state.classList.toggle('paused', campaign.paused);
  const redemptions = $('redemptions');
  redemptions.textContent = campaign.frozen ? 'redemptions frozen' : 'redemptions open';
  redemptions.classList.toggle('paused', campaign.frozen);
  $('window').textContent = `Claims from ${campaign.claim_starts_at} until ${campaign.claim_ends_at} (${campaign.time_zone}); ${campaign.currency}, ${campaign.stock} in stock${campaign.budget === undefined ? '' : `, budget ${campaign.budget}`}.`;
  const stats = campaign.stats;
  for (const name of ['claimed', 'redeemed', 'expired', 'remaining', 'remaining_stock', 'capacity', 'binding_limit', 'budget_used', 'discount_given', 'discount_unsettled']) {
    $(`n-${name}`).textContent = number(stats[name]);
  }
  $('limits-now').textContent = limitsText(campaign);
  $('limits-revision').textContent = campaign.limits_revision;
  $('rule').textContent = ruleText(campaign.expiry);
  $('revision').textContent = campaign.expiry_revision;
  $('retention').textContent = number(campaign.retention_days);
  $('redate-from').textContent = ruleText(campaign.expiry);
  $('pause').disabled = campaign.paused;
  $('resume').disabled = !campaign.paused || campaign.closed;
  $('close').disabled = campaign.closed;
  $('freeze').disabled = campaign.frozen;
  $('unfreeze').disabled = !campaign.frozen;
  record(stats);
}

function record(stats) {
  const now = Date.now();
  samples.push({ t: now, claimed: stats.claimed, redeemed: stats.redeemed });
  while (samples.length && samples[0].t < now - WINDOW_SECONDS * 1000) samples.shift();
  const rates = ratesOf(samples);
  const last = rates[rates.length - 1];
  $('r-claimed').textContent = last ? last.claimed.toFixed(0) : '–';
  $('r-redeemed').textContent = last ? last.redeemed.toFixed(0) : '–';
  draw(rates);
}

// Per-second rates between successive reads.
function ratesOf(points) {
  const rates = [];
  for (let i = 1; i < points.length; i++) {
    const seconds = (points[i].t - points[i - 1].t) / 1000;
    if (seconds <= 0) continue;
    rates.push({
      t: points[i].t,
      claimed: Math.max(0, points[i].claimed - points[i - 1].claimed) / seconds,
      redeemed: Math.max(0, points[i].redeemed - points[i - 1].redeemed) / seconds,
    });
  }
  return rates;
}

function draw(rates) {
  const svg = $('chart');
  const [width, height] = [600, 160];
  const max = Math.max(1, ...rates.map((r) => Math.max(r.claimed, r.redeemed)));
  const end = Date.now();
  const line = (name) => {
    const points = rates.map((r) => {
      const x = width - ((end - r.t) / (WINDOW_SECONDS * 1000)) * width;
      const y = height - 4 - (r[name] / max) * (height - 8);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const polyline = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    polyline.setAttribute('points', points.join(' '));
    polyline.setAttribute('class', name === 'claimed' ? 'claims' : 'redemptions');
    return polyline;
  };
  svg.replaceChildren(line('claimed'), line('redeemed'));
  $('chart-max').textContent = `top of the chart: ${max.toFixed(0)}/s`;
}

// A table row of these cells, as text.
function tableRow(texts) {
  const row = document.createElement('tr');
  for (const text of texts) {
    const cell = document.createElement('td');
    cell.textContent = text;
    row.append(cell);
  }
  return row;
}

async function loadHistory() {
  const id = selected;
  const answer = await api('GET', `/campaigns/${encodeURIComponent(id)}/expiry`);
  if (id !== selected || !answer.ok) return;
  const rows = answer.data.changes.map((c) => tableRow([c.revision, c.changed_at, c.changed_by, ruleText(c.from), ruleText(c.to), c.revive_expired ? 'yes' : 'no', c.reason || '']));
  $('history').tBodies[0].replaceChildren(...rows);
  await loadBrakes();
  await loadLimits();
  await loadEvents(true);
}

function limitsText(limits) {
  return [
    `stock ${limits.stock}`,
    limits.budget === undefined ? 'no budget' : `budget ${limits.budget}`,
    limits.max_claims_per_second === undefined ? 'no rate ceiling' : `${limits.max_claims_per_second} claims/s at most`,
  ].join(', ');
}

// Every change of stock, budget and claim rate, newest first.
async function loadLimits() {
  const id = selected;
  const answer = await api('GET', `/campaigns/${encodeURIComponent(id)}/limits`);
  if (id !== selected || !answer.ok) return;
  const rows = answer.data.changes.slice().reverse().map((c) => tableRow([c.revision, c.changed_at, c.changed_by || '', limitsText(c.from), limitsText(c.to), c.capacity, c.reason || '']));
  $('limits-history').tBodies[0].replaceChildren(...rows);
}

// Every pause, resume, freeze and unfreeze, newest first.
async function loadBrakes() {
  const id = selected;
  const answer = await api('GET', `/campaigns/${encodeURIComponent(id)}/brakes`);
  if (id !== selected || !answer.ok) return;
  const rows = answer.data.transitions.slice().reverse().map((t) => tableRow([t.at, t.action, t.changed_by || '', t.reason || '']));
  $('brakes').tBodies[0].replaceChildren(...rows);
}

// The ledger's events, oldest first, fifty at a time.
let eventsCursor = '';
async function loadEvents(fromStart) {
  const id = selected;
  if (fromStart) eventsCursor = '';
  const query = `limit=50&cursor=${encodeURIComponent(eventsCursor)}`;
  const answer = await api('GET', `/campaigns/${encodeURIComponent(id)}/events?${query}`);
  if (id !== selected || !answer.ok) return;
  eventsCursor = answer.data.next_cursor;
  const rows = answer.data.events.map((e) => tableRow([
    e.at, e.kind, e.code || '', e.user_id || '', e.order_id || '',
    e.amount === undefined ? '' : number(e.amount), e.changed_by || e.by,
  ]));
  if (fromStart) $('events').tBodies[0].replaceChildren(...rows);
  else $('events').tBodies[0].append(...rows);
}

$('more-events').addEventListener('click', () => loadEvents(false));

// Recounts the stats from the ledger, call after bounded call.
$('reconcile').addEventListener('click', async () => {
  const id = selected;
  const out = $('ledger-result');
  out.textContent = 'Counting…';
  let cursor = '';
  for (;;) {
    const answer = await api('GET', `/campaigns/${encodeURIComponent(id)}/reconciliation?cursor=${encodeURIComponent(cursor)}`);
    if (id !== selected) return;
    if (!answer.ok) {
      out.textContent = `Not reconciled: ${problem(answer)}`;
      return;
    }
    if (answer.data.status === 'counting') {
      cursor = answer.data.cursor;
      continue;
    }
    const r = answer.data;
    const l = r.ledger;
    const parts = [`Ledger: claimed ${number(l.claimed)}, redeemed ${number(l.redeemed)}, expired ${number(l.expired)}, discount given ${number(l.discount_given)}.`];
    parts.push(r.differences.length === 0
      ? 'The stats equal the ledger.'
      : `Differs from the stats: ${r.differences.map((d) => `${d.stat} ${number(d.stats)} in the stats, ${number(d.ledger)} in the ledger`).join('; ')}.`);
    if (r.unwritten > 0 || r.discount_unsettled > 0) {
      parts.push(`In flight: ${number(r.unwritten)} positions unwritten, ${number(r.discount_unsettled)} redemptions and cancels not settled; the sweep settles them a lease (90 s) after.`);
    }
    out.textContent = parts.join(' ');
    return;
  }
});

// --- actions ---

function confirmed(text) {
  const dialog = $('confirm');
  $('confirm-text').textContent = text;
  return new Promise((resolve) => {
    const done = (answer) => {
      $('confirm-yes').onclick = null;
      $('confirm-no').onclick = null;
      dialog.close();
      resolve(answer);
    };
    $('confirm-yes').onclick = () => done(true);
    $('confirm-no').onclick = () => done(false);
    dialog.showModal();
  });
}

// The two brakes: claims (pause, resume) and redemptions (freeze, unfreeze).
const BRAKES = {
  pause: { what: 'claims', on: true, flag: 'paused', done: 'paused',
           consequence: 'Once the API answers paused, no host issues another coupon of it.' },
  resume: { what: 'claims', on: false, flag: 'paused', done: 'claims open',
            consequence: 'Every host accepts its claims again.' },
  close: { what: 'claims', on: true, flag: 'closed', done: 'claims closed',
           consequence: 'This is final: no host issues another coupon of it, ever, and it cannot be resumed. Validations and redemptions go on.' },
  freeze: { what: 'redemptions', on: true, flag: 'frozen', done: 'redemptions frozen',
            consequence: 'Once the API answers frozen, no host accepts another redemption of its coupons; claims go on.' },
  unfreeze: { what: 'redemptions', on: false, flag: 'frozen', done: 'redemptions open',
              consequence: 'Every host redeems its coupons again.' },
};

async function brake(action) {
  const id = selected;
  const b = BRAKES[action];
  const verb = action[0].toUpperCase() + action.slice(1);
  if (!(await confirmed(`${verb} ${b.what} of campaign “${id}”? ${b.consequence}`))) return;
  const note = $('note').elements;
  const body = {};
  for (const name of ['changed_by', 'reason']) {
    const value = note[name].value.trim();
    if (value) body[name] = value;
  }
  const answer = await api('POST', `/campaigns/${encodeURIComponent(id)}/${action}`, body);
  if (!answer.ok) {
    $('action-result').textContent = `${verb} failed: ${problem(answer)}`;
    return;
  }
  const engaged = answer.data[b.flag];
  $('action-result').textContent = `The API answered: ${engaged === b.on ? b.done : `${b.flag} is ${engaged}`}.`;
  show(answer.data);
  await loadBrakes();
  await loadCampaigns(true);
}

for (const action of Object.keys(BRAKES)) {
  $(action).addEventListener('click', () => brake(action));
}

$('sweep').addEventListener('click', async () => {
  const answer = await api('POST', '/expirations', {});
  $('action-result').textContent = answer.ok
    ? `Sweep step: examined ${answer.data.examined}, expired ${answer.data.expired}, returned ${answer.data.returned}, settled ${answer.data.settled}${answer.data.next_cursor ? ' (more to walk)' : ''}.`
    : `Sweep failed: ${problem(answer)}`;
});

function redateRule(form) {
  const kind = form.elements.kind.value;
  if (kind === 'at') return { kind, at: form.elements.at.value.trim() };
  return kind === 'end_of_month' ? { kind, month: form.elements.month.value.trim() } : { kind };
}

$('redate-form').addEventListener('input', (event) => {
  $('redate-to').textContent = ruleText(redateRule(event.currentTarget));
});

$('redate-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const body = {
    expiry: redateRule(form),
    changed_by: form.elements.changed_by.value.trim(),
    revive_expired: form.elements.revive_expired.checked,
  };
  const reason = form.elements.reason.value.trim();
  if (reason) body.reason = reason;
  const id = selected;
  const text = `Re-date campaign “${id}” from ${$('redate-from').textContent} to ${ruleText(body.expiry)}?`;
  if (!(await confirmed(text))) return;
  const answer = await api('PUT', `/campaigns/${encodeURIComponent(id)}/expiry`, body);
  showErrors(form, answer);
  if (answer.ok) {
    show(answer.data);
    loadHistory();
  }
});

// A limit as the form gives it: empty stays, `none` removes, a number sets.
function limitValue(text) {
  const value = text.trim();
  if (value === '') return undefined;
  if (value.toLowerCase() === 'none') return null;
  return /^[0-9]+$/.test(value) ? Number(value) : value;
}

$('limits-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const body = {};
  for (const name of ['stock', 'budget', 'max_claims_per_second']) {
    const value = limitValue(form.elements[name].value);
    if (value !== undefined) body[name] = value;
  }
  for (const name of ['changed_by', 'reason']) {
    const value = form.elements[name].value.trim();
    if (value) body[name] = value;
  }
  const id = selected;
  const asked = Object.entries(body)
    .filter(([name]) => name !== 'changed_by' && name !== 'reason')
    .map(([name, value]) => `${name} ${value === null ? 'none' : value}`)
    .join(', ');
  if (!asked) {
    showErrors(form, { ok: false, data: { error: { field: 'stock', message: 'give a stock, budget or claim rate to change' } } });
    return;
  }
  if (!(await confirmed(`Change the limits of campaign “${id}” from ${$('limits-now').textContent} to ${asked}?`))) return;
  const answer = await api('PATCH', `/campaigns/${encodeURIComponent(id)}/limits`, body);
  showErrors(form, answer);
  if (answer.ok) {
    show(answer.data);
    loadLimits();
  }
});

$('cancel-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const code = form.elements.code.value.trim();
  const order = form.elements.order_id.value.trim();
  const answer = await api('DELETE', `/redemptions/${encodeURIComponent(code)}?order_id=${encodeURIComponent(order)}`);
  $('cancel-result').textContent = answer.ok
    ? `Cancelled: the coupon is ${answer.data.state} again.`
    : `Not cancelled: ${problem(answer)}`;
});

// --- customer support: any coupon by its code ---

$('lookup-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const code = event.currentTarget.elements.code.value.trim();
  const list = $('lookup');
  list.replaceChildren();
  list.hidden = true;
  $('lookup-error').textContent = '';
  const answer = await api('GET', `/coupons/${encodeURIComponent(code)}`);
  if (!answer.ok) {
    $('lookup-error').textContent = answer.status === 404 ? 'No coupon has that code.' : problem(answer);
    return;
  }
  const c = answer.data;
  const discount = c.discount.kind === 'percent'
    ? `${c.discount.basis_points / 100}%` + (c.discount.max_amount ? `, at most ${number(c.discount.max_amount)}` : '')
    : number(c.discount.amount);
  const facts = [
    ['Code', c.code], ['Campaign', c.campaign_id], ['Holder', c.user_id], ['State', c.state],
    ['Off', `${discount} ${c.currency}`], ['Min. order', number(c.min_order_amount)],
    ['Issued', c.issued_at], ['Expires', c.expires_at],
  ];
  if (c.order_id) facts.push(['Order', c.order_id]);
  if (c.held_for) facts.push(['Held for order', `${c.held_for} until ${c.held_until}`]);
  for (const [term, value] of facts) {
    const dt = document.createElement('dt');
    dt.textContent = term;
    const dd = document.createElement('dd');
    dd.textContent = value;
    dd.dataset.field = term.toLowerCase();
    list.append(dt, dd);
  }
  list.hidden = false;
});

// --- a new campaign ---

$('new').addEventListener('click', () => {
  selected = null;
  clearInterval(poller);
  $('detail').hidden = true;
  $('create').hidden = false;
  const form = $('create-form');
  const now = new Date();
  const iso = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
  if (!form.elements.claim_starts_at.value) form.elements.claim_starts_at.value = iso(now);
  if (!form.elements.claim_ends_at.value) form.elements.claim_ends_at.value = iso(new Date(now.getTime() + 7 * 86400e3));
});

// The form's fields, named by their path in the API's body.
function campaignBody(form) {
  const value = (name) => form.elements[name].value.trim();
  const integer = (name) => {
    const text = value(name);
    return /^-?\d+$/.test(text) ? Number(text) : text === '' ? undefined : text;
  };
  const discount = value('discount.kind') === 'fixed'
    ? { kind: 'fixed', amount: integer('discount.amount') }
    : { kind: 'percent', basis_points: integer('discount.basis_points'), max_amount: integer('discount.max_amount') };
  const expiry = value('expiry.kind') === 'end_of_month'
    ? { kind: 'end_of_month', month: value('expiry.month') }
    : { kind: 'end_of_claim_month' };
  const body = {
    id: value('id'),
    name: value('name'),
    currency: value('currency'),
    discount,
    min_order_amount: integer('min_order_amount'),
    stock: integer('stock'),
    budget: integer('budget'),
    per_user_limit: integer('per_user_limit'),
    claim_starts_at: value('claim_starts_at'),
    claim_ends_at: value('claim_ends_at'),
    time_zone: value('time_zone'),
    expiry,
    max_claims_per_second: integer('max_claims_per_second'),
    coupons_per_order: integer('coupons_per_order'),
    hold_seconds: integer('hold_seconds'),
    retention_days: integer('retention_days'),
    redeemable_by_users: form.elements.redeemable_by_users.checked,
  };
  // JSON.stringify leaves out what is undefined: an optional field left empty.
  return body;
}

// Shows the API's error at its field: the span for the field, else for the
// nearest enclosing one (`discount` for `discount.kind`), else the form's.
function showErrors(form, answer) {
  for (const span of form.querySelectorAll('.error[data-field]')) span.textContent = '';
  for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  if (answer.ok) return;
  const error = answer.data && answer.data.error;
  let field = error && error.field ? error.field : '';
  const message = error ? error.message : problem(answer);
  const input = form.elements[field];
  if (input && input.setAttribute) input.setAttribute('aria-invalid', 'true');
  let span = null;
  while (!span) {
    span = form.querySelector(`.error[data-field="${CSS.escape(field)}"]`);
    if (span || field === '') break;
    field = field.includes('.') ? field.slice(0, field.lastIndexOf('.')) : '';
  }
  (span || form.querySelector('.error[data-field=""]')).textContent = message;
}

$('create-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const body = campaignBody(form);
  const answer = await api('POST', '/campaigns', body);
  showErrors(form, answer);
  if (answer.ok) {
    await loadCampaigns(true);
    select(answer.data.id);
  }
});

if (token) {
  openWith(token);
}
