// Each role logs in to the console in Firefox ESR (Debian's own build, driven over WebDriver
// BiDi by puppeteer-core: no browser is downloaded) and takes one step on its main page.
// Usage: node firefox_journeys.mjs CONSOLE_URL PASSWORD UNIT_ID SHOTS_DIR
// Prints one JSON line per role: {role, landed, seen} or {role, error}; test_console_firefox.py judges.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";

const [console_, password, unit, shots] = process.argv.slice(2);

// The role's main page, and one step on it: what it returns is what the person sees after it.
const JOURNEYS = {
  admin: async (page) => {  // the audit log (administrators land on the citizens), filtered by who
    await page.goto(`${console_}/audit`);
    await page.type("#actor", "cli:root");
    await Promise.all([page.waitForNavigation(), page.click("form.filters button:not([name])")]);
    return page.$$eval("#audit tbody tr td:nth-child(3)", (cells) => [...new Set(cells.map((c) => c.textContent))]);
  },
  logistics: async (page) => {  // the units, searched by the unit's id
    await page.type("#filter-q", unit.slice(0, 8));
    await Promise.all([page.waitForNavigation(), page.click("#unit-filter button[type=submit]")]);
    return page.$$eval("#units tbody tr[data-unit]", (rows) => rows.map((r) => r.dataset.unit));
  },
  support: async (page) => {  // a unit's page, from the list
    await Promise.all([page.waitForNavigation(), page.click(`a[href='/units/${unit}']`)]);
    return page.$eval("h1", (h) => h.textContent.trim());
  },
  caregiver: async (page) => {  // my citizens, one of them opened
    await Promise.all([page.waitForNavigation(), page.click("#citizen-list a.name")]);
    return page.$eval("h1", (h) => h.textContent.trim());
  },
  management: async (page) => {  // the figures, per week
    await page.select("#period", "week");
    await Promise.all([page.waitForNavigation(), page.click("form.filters button[type=submit]")]);
    return page.$$eval("#figures tbody tr td:first-child", (cells) => cells.length);
  },
};

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "console-firefox-"));
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: "/usr/bin/firefox-esr",
  headless: true,
  userDataDir: profile,
  // nothing leaves the machine: no updates, no telemetry, no captive-portal or connectivity checks
  extraPrefsFirefox: {
    "app.update.enabled": false,
    "network.captive-portal-service.enabled": false,
    "network.connectivity-service.enabled": false,
    "datareporting.policy.dataSubmissionEnabled": false,
    "toolkit.telemetry.enabled": false,
    "browser.safebrowsing.malware.enabled": false,
    "browser.safebrowsing.phishing.enabled": false,
  },
});
try {
  console.log(JSON.stringify({ role: "*", version: await browser.version() }));
  for (const [role, step] of Object.entries(JOURNEYS)) {
    const context = await browser.createBrowserContext();  // a fresh cookie jar per person
    const page = await context.newPage();
    // puppeteer's 30 s per step is too short beside the rest of the suite (a logged-in search
    // once took longer at load ~19); a page that never comes still fails, at two minutes
    page.setDefaultTimeout(120_000);
    page.setDefaultNavigationTimeout(120_000);
    await page.setViewport({ width: 1280, height: 900 });
    try {
      await page.goto(`${console_}/`);
      await page.type("#username", role);
      await page.type("#password", password);
      await Promise.all([page.waitForNavigation(), page.click("#login button[type=submit]")]);
      await page.waitForSelector("#logout");
      const landed = new URL(page.url()).pathname;
      const seen = await step(page);
      await page.screenshot({ path: path.join(shots, `firefox-${role}.png`), fullPage: true });
      console.log(JSON.stringify({ role, landed, seen }));
    } catch (error) {
      console.log(JSON.stringify({ role, error: String(error) }));
    } finally {
      await context.close();
    }
  }
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
