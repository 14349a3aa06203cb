// Drives Debian's chromium through playwright-core for tests/web.rs.
//
//   node driver.mjs <scenario> <gateway base URL> <admin ticket> <artifacts dir>
//
// Scenarios: `console` (a command through the direct console, resize, a reused key, an
// expired key, a host-key mismatch, an unreachable device) and `tracking` (keyboard sign-in, cookie flags, live updates, terminate
// from the tracking page cuts an open console). Prints one JSON object with what it saw on the
// last line of stdout; the Rust test asserts on it. Exits 1 (after a screenshot of every open
// page) when a step fails or times out.
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [scenario, base, ticket, artifacts] = process.argv.slice(2);
if (!scenario || !base || !ticket || !artifacts) {
  console.error('usage: node driver.mjs <scenario> <base> <ticket> <artifacts dir>');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const T = 30_000;
const result = { scenario, consoleErrors: [] };
const profile = mkdtempSync(join(tmpdir(), 'sallyport-chromium-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.SALLYPORT_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  ignoreHTTPSErrors: true,
  viewport: { width: 1100, height: 640 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

function watch(page, name) {
  page.on('console', (m) => {
    if (m.type() === 'error') result.consoleErrors.push(`${name}: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.consoleErrors.push(`${name}: ${e.message}`));
  return page;
}

const keys = [];
result.keys = keys;
async function issue(user, device, duration = 120) {
  const r = await ctx.request.post(`${base}/api/v1/opensession`, {
    headers: { ticket }, data: { user, target_device: device, duration },
  });
  if (!r.ok()) throw new Error(`opensession ${user}/${device}: ${r.status()} ${await r.text()}`);
  const key = (await r.json()).session_token;
  keys.push(key);
  return key;
}

async function openConsole(name, user, device, otk, state) {
  const page = watch(await ctx.newPage(), name);
  await page.goto(`${base}/direct/${device}/console#user=${user}&session_token=${otk}`);
  await page.waitForSelector(`body[data-state=${state}]`, { timeout: T });
  return page;
}

// The last terminal line matching `pattern` (xterm.js DOM renderer: one div per row), waiting
// for one to appear. The page's CSP forbids eval, so the function is passed as is.
async function waitForLine(page, pattern) {
  const found = await page.waitForFunction((re) => {
    const hits = Array.from(document.querySelectorAll('.xterm-rows > div'))
      .map((d) => d.textContent.replace(/\u00a0/g, ' ').trim())
      .filter((l) => new RegExp(re).test(l));
    return hits.length ? hits[hits.length - 1] : null;
  }, pattern, { timeout: T });
  return found.jsonValue();
}

async function run(page, command) {
  await page.locator('#terminal').click();
  await page.keyboard.type(command);
  await page.keyboard.press('Enter');
}

async function consoleScenario() {
  const otk = await issue('admin', 'edge-1');
  const page = await openConsole('console', 'admin', 'edge-1', otk, 'ready');
  result.urlAfterLoad = page.url();
  result.status = await page.locator('#status').textContent();
  await run(page, 'echo $((6*7))');
  result.answer = await waitForLine(page, '^42$');
  await run(page, 'echo size=$(stty size | tr " " x)');
  result.sizeBefore = await waitForLine(page, '^size=\\d+x\\d+$');
  await page.setViewportSize({ width: 700, height: 420 });
  await page.waitForTimeout(300);
  await run(page, 'echo resized=$(stty size | tr " " x)');
  result.sizeAfter = (await waitForLine(page, '^resized=\\d+x\\d+$')).replace('resized=', 'size=');
  await page.setViewportSize({ width: 1100, height: 640 });
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(artifacts, 'console.png') });

  const again = await openConsole('reused', 'admin', 'edge-1', otk, 'error');
  result.reused = await again.locator('#status').textContent();
  await again.screenshot({ path: join(artifacts, 'console-reused-key.png') });

  const bad = await openConsole('unreachable', 'admin', 'bad-1', await issue('admin', 'bad-1'), 'error');
  result.unreachable = await bad.locator('#status').textContent();
  const down = await openConsole('down', 'admin', 'down-1', await issue('admin', 'down-1'), 'error');
  result.down = await down.locator('#status').textContent();
  const stale = await issue('admin', 'edge-1', 1);
  await new Promise((r) => setTimeout(r, 2200));
  const expired = await openConsole('expired', 'admin', 'edge-1', stale, 'error');
  result.expired = await expired.locator('#status').textContent();
  const none = await openConsole('no-fragment', 'admin', 'edge-1', '', 'error');
  result.noToken = await none.locator('#status').textContent();

  // Terminating through the REST API cuts an open console.
  const live = await openConsole('rest-terminate', 'admin', 'core-1', await issue('admin', 'core-1'), 'ready');
  const list = await ctx.request.get(`${base}/api/v1/tracking/opensessions`, { headers: { ticket } });
  const id = (await list.json()).find((s) => s.device === 'core-1' && s.state === 'initiated').id;
  const started = Date.now();
  const done = await ctx.request.post(`${base}/api/v1/tracking/opensessions/terminate`, {
    headers: { ticket }, data: { sessions: id },
  });
  if (!done.ok()) throw new Error(`terminate: ${done.status()} ${await done.text()}`);
  await live.waitForSelector('body[data-state=error]', { timeout: T });
  result.restCutMs = Date.now() - started;
  result.restCutMessage = await live.locator('#status').textContent();
}

async function trackingScenario() {
  const otk = await issue('alice', 'edge-1');
  const term = await openConsole('console', 'alice', 'edge-1', otk, 'ready');
  await run(term, 'whoami');

  const page = watch(await ctx.newPage(), 'tracking');
  await page.goto(`${base}/tracking`);
  // Keyboard only: the username field has focus, Tab to the password, Enter submits.
  await page.waitForSelector('#username:focus', { timeout: T });
  await page.keyboard.type('admin');
  await page.keyboard.press('Tab');
  await page.keyboard.type('admin-pw');
  await Promise.all([page.waitForNavigation({ timeout: T }), page.keyboard.press('Enter')]);
  await page.waitForSelector('table#tracking', { timeout: T });
  const cookie = (await ctx.cookies(base)).find((c) => c.name === '__Host-sallyport');
  result.cookie = cookie && { httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite };
  const alice = page.locator('tr', { hasText: 'alice' }).filter({ hasText: 'initiated' });
  await alice.waitFor({ timeout: T });
  result.aliceRow = (await alice.innerText()).replace(/\s+/g, ' ').trim();

  // A key issued now shows up as "generated" without a reload.
  await page.evaluate(() => { window.notReloaded = true; });
  await issue('admin', 'core-1');
  const fresh = page.locator('tr', { hasText: 'core-1' }).filter({ hasText: 'generated' });
  await fresh.waitFor({ timeout: T });
  result.liveUpdate = await page.evaluate(() => window.notReloaded === true);
  await page.screenshot({ path: join(artifacts, 'tracking.png'), fullPage: true });

  const button = page.getByRole('button', { name: 'Terminate the open session of alice on edge-1' });
  const started = Date.now();
  await Promise.all([page.waitForNavigation({ timeout: T }), button.click()]);
  await term.waitForSelector('body[data-state=error]', { timeout: T });
  result.cutMs = Date.now() - started;
  result.cutMessage = await term.locator('#status').textContent();
  result.notice = await page.locator('#notice').textContent();
  await alice.waitFor({ state: 'detached', timeout: T });
  result.terminatedRow = (await page.locator('tr', { hasText: 'alice' }).first().innerText()).replace(/\s+/g, ' ').trim();
  await page.screenshot({ path: join(artifacts, 'tracking-after-terminate.png'), fullPage: true });
  await term.screenshot({ path: join(artifacts, 'console-terminated.png') });
}

let code = 0;
try {
  if (scenario === 'console') await consoleScenario();
  else if (scenario === 'tracking') await trackingScenario();
  else throw new Error(`unknown scenario ${scenario}`);
  result.ok = true;
} catch (e) {
  code = 1;
  result.ok = false;
  result.error = String(e && e.stack || e);
  let i = 0;
  for (const p of ctx.pages()) {
    await p.screenshot({ path: join(artifacts, `${scenario}-failure-${i++}.png`) }).catch(() => {});
  }
}
await ctx.close().catch(() => {});
rmSync(profile, { recursive: true, force: true });
console.log(JSON.stringify(result));
process.exit(code);
