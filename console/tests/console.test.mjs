// Browser tests of the console: Playwright (playwright-core) driving
// Debian's Chromium against real hub and node processes, started by
// crates/cli/tests/console.rs, which passes:
//   AIRLOCK_CONSOLE_URL   the hub's https://HOST:PORT
//   AIRLOCK_TOKEN_PUBLISHER, AIRLOCK_TOKEN_ADVERTISER   member tokens
//   AIRLOCK_CHROMIUM      the browser (/usr/bin/chromium)
//   AIRLOCK_SCREENSHOTS   where to write the pages' screenshots (docs/console)
// It prints `MEASURE name value` lines the Rust side reports.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const URL = process.env.AIRLOCK_CONSOLE_URL;
const PUB = process.env.AIRLOCK_TOKEN_PUBLISHER;
const ADV = process.env.AIRLOCK_TOKEN_ADVERTISER;
const SHOTS = process.env.AIRLOCK_SCREENSHOTS;

const OVERLAP = 'SELECT a.segment, COUNT(DISTINCT a.email) AS people, SUM(p.amount_cents) AS revenue_cents FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment';
const BY_TWO = 'SELECT a.segment, a.region, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment, a.region';
const REFUSED = 'SELECT a.email, COUNT(*) AS n FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.email';
const DP = 'SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment';
const SCRIPT = 'SELECT segment AS "<script>window.__pwned=1</script>", COUNT(DISTINCT email) AS "<img src=x onerror=window.__pwned=2>" FROM audience GROUP BY segment';

let browser;
const cspViolations = [];

async function newPage() {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) cspViolations.push(m.text());
  });
  page.on('pageerror', (e) => cspViolations.push(`page error: ${e.message}`));
  return page;
}

async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}.png` });
}

async function signIn(page, token) {
  await page.goto(`${URL}/`);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Collaborations' }).waitFor();
}

async function setSql(page, sql) {
  const editor = page.getByLabel('SQL', { exact: true }).and(page.locator('.cm-content'));
  await editor.click();
  await page.keyboard.press('Control+a');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(sql);
  await page.keyboard.press('Escape');
}

async function runAndWait(page) {
  await page.getByRole('button', { name: 'Run', exact: true }).click();
  await page.locator('#query-state').filter({ hasText: /released|refused|failed/ }).waitFor({ timeout: 120000 });
  return page.locator('#query-state').textContent();
}

test('the console, as members use it', async (t) => {
  browser = await chromium.launch({
    executablePath: process.env.AIRLOCK_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    await t.test('the first page loads fast from a cold cache', async () => {
      const page = await newPage();
      await page.goto(`${URL}/`);
      await page.getByLabel('Token').waitFor();
      const nav = await page.evaluate(() => {
        const n = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource');
        return { load: n.loadEventEnd - n.startTime, bytes: n.transferSize + res.reduce((a, r) => a + r.transferSize, 0) };
      });
      console.log(`MEASURE first_load_ms ${nav.load.toFixed(0)}`);
      console.log(`MEASURE first_load_transfer_bytes ${nav.bytes}`);
      await shot(page, 'sign-in');
      await page.context().close();
    });

    await t.test('without a session nothing is answered, and a wrong token is refused', async () => {
      const page = await newPage();
      await page.goto(`${URL}/`);
      const status = await page.evaluate(async () => (await fetch('/v1/collaborations')).status);
      assert.equal(status, 401);
      await page.getByLabel('Token').fill('alk_not-a-token');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('alert').filter({ hasText: 'unauthorized' }).waitFor();
      assert.equal(await page.evaluate(() => document.cookie), '', 'no cookie a script can read');
      await page.context().close();
    });

    const adv = await newPage();
    await t.test('sign in, open the demo collaboration', async () => {
      await signIn(adv, ADV);
      assert.equal(await adv.evaluate(() => document.cookie), '', 'the session cookie is HttpOnly');
      const stored = await adv.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
      assert.ok(!stored.includes(ADV), 'the token is in no page storage');
      assert.ok(!adv.url().includes(ADV), 'nor in the URL');
      await shot(adv, 'collaborations');
      await adv.getByRole('link', { name: 'demo', exact: true }).click();
      await adv.getByRole('heading', { name: 'Collaboration demo' }).waitFor();
      await adv.getByRole('heading', { name: 'Configured tables' }).waitFor();
      assert.match(await adv.locator('main').textContent(), /At least \d+ distinct people per output row/);
      await shot(adv, 'collaboration');
    });

    await t.test('check and run the overlap: table and chart', async () => {
      await adv.getByRole('link', { name: 'Query' }).click();
      await setSql(adv, OVERLAP);
      await adv.getByRole('button', { name: 'Check' }).click();
      await adv.locator('#check .ok').waitFor();
      assert.match(await adv.locator('#check').textContent(), /allowed/);
      assert.equal(await runAndWait(adv), 'released');
      const table = adv.locator('#result-table');
      await table.waitFor();
      const header = await table.locator('th').allTextContents();
      assert.deepEqual(header, ['segment', 'people', 'revenue_cents']);
      const cells = await table.locator('tbody td.num').allTextContents();
      assert.ok(cells.length >= 2, 'rows released');
      assert.ok(cells.some((c) => /^\d{1,3}(,\d{3})+$/.test(c)), `thousands separators: ${cells}`);
      // Sorting by people, descending on the second press.
      await table.getByRole('button', { name: 'people' }).click();
      await table.getByRole('button', { name: 'people' }).click();
      const sorted = (await table.locator('tbody tr td:nth-child(2)').allTextContents()).map((c) => Number(c.replaceAll(',', '')));
      assert.deepEqual(sorted, [...sorted].sort((a, b) => b - a));
      await shot(adv, 'query-result');
      await adv.getByRole('button', { name: 'Show chart' }).click();
      await adv.locator('#result-chart').waitFor();
      const drawn = await adv.evaluate(() => {
        const c = document.getElementById('result-chart');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let ink = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] > 0) ink++;
        return ink;
      });
      assert.ok(drawn > 1000, `the chart is drawn (${drawn} pixels)`);
      await shot(adv, 'query-chart');
      await adv.getByRole('button', { name: 'Show table' }).click();
      assert.ok(await adv.locator('#result-table').isVisible());
      // Downloads: CSV with the same header.
      const csv = await adv.evaluate(async () => {
        const a = [...document.querySelectorAll('a')].find((x) => x.textContent === 'Download CSV');
        return (await fetch(a.href)).text();
      });
      assert.ok(csv.startsWith('segment,people,revenue_cents\n'), csv.slice(0, 40));
      // Two dimensions: a grouped bar chart.
      await setSql(adv, BY_TWO);
      assert.equal(await runAndWait(adv), 'released');
      await adv.getByRole('button', { name: 'Show chart' }).click();
      await adv.locator('#result-chart').waitFor();
    });

    await t.test('a refusal is shown as the CLI shows it, its column marked', async () => {
      await setSql(adv, REFUSED);
      const alert = adv.locator('#check .err');
      await alert.waitFor();
      const text = await alert.textContent();
      assert.match(text, /^refused: /);
      assert.match(text, /'email'/);
      await adv.locator('.cm-refused').first().waitFor();
      assert.equal(await adv.locator('.cm-refused').first().textContent(), 'email');
      await shot(adv, 'refusal');
    });

    await t.test('the live check answers quickly after the last keystroke', async () => {
      const times = [];
      for (let i = 0; i < 11; i++) {
        await setSql(adv, i % 2 ? REFUSED : OVERLAP);
        await adv.locator('#check [data-ms]').waitFor();
        const before = await adv.locator('#check [data-ms]').getAttribute('data-seq');
        const t0 = Date.now();
        await adv.keyboard.type(' ');
        await adv.waitForFunction((b) => {
          const el = document.querySelector('#check [data-ms]');
          return el && el.getAttribute('data-seq') !== b;
        }, before);
        times.push(Date.now() - t0);
      }
      times.sort((a, b) => a - b);
      console.log(`MEASURE live_check_median_ms ${times[Math.floor(times.length / 2)]}`);
      console.log(`MEASURE live_check_max_ms ${times[times.length - 1]}`);
    });

    await t.test('CSRF: a state-changing call on the session without its token fails', async () => {
      const statuses = await adv.evaluate(async () => {
        const body = JSON.stringify({ sql: 'SELECT 1' });
        const headers = { 'content-type': 'application/json' };
        const without = await fetch('/v1/collaborations/demo/check', { method: 'POST', body, headers });
        const wrong = await fetch('/v1/collaborations/demo/queries', { method: 'POST', body, headers: { ...headers, 'x-csrf-token': 'f'.repeat(64) } });
        const out = await fetch('/v1/session', { method: 'DELETE' });
        return [without.status, wrong.status, out.status, (await without.json()).error];
      });
      assert.deepEqual(statuses.slice(0, 3), [403, 403, 403], statuses[3]);
      assert.match(statuses[3], /CSRF/);
    });

    await t.test("another member's collaboration answers like a missing one", async () => {
      const [solo, none] = await adv.evaluate(async () => Promise.all(['solo', 'no-such-thing'].map(async (n) => {
        const r = await fetch(`/v1/collaborations/${n}`);
        return [r.status, await r.text()];
      })));
      assert.deepEqual(solo, none);
      assert.equal(solo[0], 404);
      await adv.goto(`${URL}/#/c/solo`);
      await adv.getByRole('alert').waitFor();
      const a = await adv.getByRole('alert').textContent();
      await adv.goto(`${URL}/#/c/no-such-thing`);
      await adv.getByRole('alert').filter({ hasText: 'no such' }).waitFor();
      assert.equal(await adv.getByRole('alert').textContent(), a);
    });

    const pub = await newPage();
    await t.test('the keyboard alone signs in and moves through the pages', async () => {
      await pub.goto(`${URL}/`);
      await pub.getByLabel('Token').waitFor();
      // The Token field has the focus: type, Enter.
      await pub.keyboard.type(PUB);
      await pub.keyboard.press('Enter');
      await pub.getByRole('heading', { name: 'Collaborations' }).waitFor();
      // Tab to the demo collaboration's link and follow it.
      for (let i = 0; i < 30; i++) {
        await pub.keyboard.press('Tab');
        if (await pub.evaluate(() => document.activeElement?.textContent) === 'demo') break;
      }
      await pub.keyboard.press('Enter');
      await pub.getByRole('heading', { name: 'Collaboration demo' }).waitFor();
    });

    await t.test('approve a template as its owner; run it as the analyst', async () => {
      await pub.goto(`${URL}/#/`);
      await pub.getByRole('link', { name: 'Approvals' }).click();
      await pub.getByRole('heading', { name: 'Templates over your data' }).waitFor({ timeout: 10000 }).catch(async (e) => {
        throw new Error(`${e.message}\n${await pub.locator('main').textContent()}`);
      });
      await pub.getByRole('button', { name: 'Approve template overlap_in_region' }).click();
      await pub.locator('.status.ok').filter({ hasText: 'checks passed' }).waitFor();
      // The approval is a new policy version: each owner signs it with
      // its member key, in its own browser.
      for (const [page, key] of [[pub, process.env.AIRLOCK_KEY_PUBLISHER], [adv, process.env.AIRLOCK_KEY_ADVERTISER]]) {
        await page.goto(`${URL}/#/approvals`);
        await page.reload();
        await page.getByRole('heading', { name: 'Collaboration versions waiting for you' }).waitFor();
        const button = page.getByRole('button', { name: /^Approve version \d+ of demo$/ });
        await button.waitFor();
        await page.getByLabel('Member key file for demo').setInputFiles(key);
        if (page === pub) await shot(pub, 'approvals');
        await button.click();
        await page.locator('.status.ok').filter({ hasText: /approved version/ }).waitFor();
      }
      await adv.goto(`${URL}/#/c/demo/query`);
      await adv.getByLabel('region (string)').selectOption('south');
      await adv.getByRole('button', { name: 'Run template overlap_in_region' }).click();
      await adv.locator('#query-state').filter({ hasText: /released|refused|failed/ }).waitFor({ timeout: 120000 });
      assert.equal(await adv.locator('#query-state').textContent(), 'released', await adv.locator('#run').textContent());
      await adv.locator('#result-table').waitFor();
    });

    await t.test('a result containing markup is shown as text', async () => {
      await pub.goto(`${URL}/#/c/solo/query`);
      await setSql(pub, SCRIPT);
      assert.equal(await runAndWait(pub), 'released', await pub.locator('#run').textContent());
      const header = await pub.locator('#result-table th').allTextContents();
      assert.deepEqual(header, ['<script>window.__pwned=1</script>', '<img src=x onerror=window.__pwned=2>']);
      assert.equal(await pub.locator('#result-table script, #result-table img').count(), 0);
      assert.equal(await pub.evaluate(() => window.__pwned), undefined);
    });

    await t.test('under DP the gauge moves, and a query past the budget is refused', async () => {
      await adv.goto(`${URL}/#/c/demo_dp/query`);
      await adv.locator('#budget-collab').waitFor();
      const left = async () => Number(await adv.locator('#budget-collab').getAttribute('data-left'));
      const start = await left();
      assert.ok(start > 0);
      await setSql(adv, DP);
      await adv.locator('#check .ok').filter({ hasText: 'cost: epsilon' }).waitFor();
      let released = 0;
      for (let i = 0; i < 10; i++) {
        const before = await left();
        const state = await runAndWait(adv);
        if (state !== 'released') break;
        released++;
        await adv.waitForFunction((b) => Number(document.getElementById('budget-collab')?.getAttribute('data-left')) < b, before);
        if (i === 0) {
          await adv.locator('#result-table').waitFor();
          assert.match(await adv.locator('#result-table tbody').textContent(), /±/);
          await adv.locator('#budget-collab').scrollIntoViewIfNeeded();
          await shot(adv, 'budget');
        }
      }
      assert.ok(released >= 1, 'released under DP');
      assert.match(await adv.locator('#run').textContent(), /budget/i);
      assert.ok((await left()) < start);
    });

    await t.test('the audit timeline verifies; the record of processing is shown', async () => {
      await adv.goto(`${URL}/#/c/demo/audit`);
      await adv.locator('#verification').waitFor();
      assert.match(await adv.locator('#verification').textContent(), /^audit chain verifies: \d+ entries, head [0-9a-f]{64}$/);
      const items = await adv.locator('#timeline li').count();
      assert.ok(items > 5, `${items} entries`);
      assert.match(await adv.locator('#timeline').textContent(), /query\.released/);
      assert.match(await adv.locator('#records').textContent(), /"record_of_processing": "demo"/);
      await shot(adv, 'audit');
    });

    await t.test('sign out, and the pages refuse', async () => {
      await adv.getByRole('button', { name: 'Sign out' }).click();
      await adv.getByLabel('Token').waitFor();
      const status = await adv.evaluate(async () => (await fetch('/v1/collaborations')).status);
      assert.equal(status, 401);
      await adv.goto(`${URL}/#/c/demo/query`);
      await adv.getByLabel('Token').waitFor();
      assert.equal(await adv.locator('.cm-content').count(), 0);
    });

    assert.deepEqual(cspViolations, [], 'no Content-Security-Policy violation or page error');
  } finally {
    await browser.close();
  }
});
